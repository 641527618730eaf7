"""Every tunable of a chatter node, with its default and the reason for it.

Named profiles (``lan``, ``local``) bundle the timings, the way memberlist's
DefaultLANConfig / DefaultLocalConfig do. Command-line options override single fields.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

DEFAULT_PORT = 2428  # chatter-rs's default UDP port


@dataclass(frozen=True)
class Config:
    # --- wire -------------------------------------------------------------------------
    # Largest datagram we build. 1400 bytes stays under the usual 1500-byte Ethernet MTU
    # minus IP/UDP headers, so nothing is fragmented.
    max_datagram: int = 1400
    # Largest datagram we accept. Bigger ones are dropped and counted as oversize.
    max_receive: int = 65_507
    # Deepest JSON nesting accepted inside a payload; deeper ones are rejected as malformed.
    max_payload_depth: int = 32

    # --- dissemination ----------------------------------------------------------------
    # Peers a new message is pushed to on each flush. 3 is SWIM/memberlist's usual figure.
    fanout: int = 3
    # Each node transmits a message fanout + ceil(retransmit_mult * log10(N + 1)) times in
    # all, so that the chance that a live node never receives it stays far below 0.1 % at 5 %
    # loss (see tests/sim). Grows with log N like memberlist's RetransmitMult.
    retransmit_mult: float = 4.0
    # A message that arrives is forwarded after this delay. 0: at once, in the same turn of
    # the event loop; the messages drained from the socket together still share datagrams.
    flush_delay: float = 0.0
    # While a node still has messages to retransmit, it flushes again at this interval.
    # A node missed by the first wave of pushes (about e^-fanout of them) gets the message in
    # the next round, so this bounds the slowest delivery: 10 ms gives ~25 ms to every node
    # of 30 in simulation, against ~65 ms with 30 ms. No cost when idle.
    gossip_interval: float = 0.01
    # Hop budget given to new messages: ceil(log_fanout(N)) + hop_margin, at most max_hops.
    hop_margin: int = 3
    max_hops: int = 32
    # How long message ids are remembered for duplicate filtering, and the most ids kept.
    seen_ttl: float = 120.0
    seen_max: int = 200_000
    # Messages whose origin timestamp is older than this (by our clock) are dropped instead
    # of being delivered again after their id left the seen-set. Tolerates clock skew up to
    # seen_ttl - max_message_age between hosts.
    max_message_age: float = 60.0

    # Repair of the rumors mongering missed (core/repair.py): rumors delivered in the last
    # repair_window seconds are kept, and every repair_interval a node that holds some swaps
    # a summary with one random peer. A gap is asked for once it is repair_grace old (younger
    # ones are usually still in flight). The window must stay under max_message_age.
    repair_interval: float = 1.0
    repair_window: float = 30.0
    repair_grace: float = 0.5

    # --- roles ------------------------------------------------------------------------
    # A node takes part in role elections only this long after it started (or joined), so
    # that it sees the other candidates and the current claims before it may claim itself.
    role_settle: float = 1.0

    # --- failure detection ------------------------------------------------------------
    # Each node sends a heartbeat to `monitors` peers (its successors on a hash ring) every
    # heartbeat_interval. The load per node is monitors / heartbeat_interval datagrams per
    # second whatever the cluster size.
    heartbeat_interval: float = 0.25
    monitors: int = 3
    # A monitor that hears nothing from a node for suspect_after seconds suspects it
    # (the seeds' figure: the failover system took over after 2 s of silence).
    suspect_after: float = 2.0
    # Lifeguard-style suspicion timeout: suspicion_max with one accuser, shrinking
    # logarithmically to suspicion_min when every monitor of the node agrees.
    suspicion_min: float = 0.5
    suspicion_max: float = 4.0
    # Local health: if our own timers fire later than this, we were starved (CPU, GC, a
    # paused process) and we do not count the stall against the nodes we monitor.
    max_timer_lateness: float = 0.3

    # --- membership -------------------------------------------------------------------
    # Push-pull anti-entropy with one random live peer every pushpull_interval seconds.
    pushpull_interval: float = 5.0
    # Every reconnect_interval we also try one random dead member, so healed partitions merge.
    reconnect_interval: float = 5.0
    # Seeds given with --join are retried this often until one answers.
    join_retry_interval: float = 1.0
    # Dead and left members are forgotten after this long (Serf's reap interval is 24 h;
    # shorter here so long-running test clusters stay small).
    reap_after: float = 3600.0
    # Device tombstones (removed devices) are kept this long so late gossip cannot revive them.
    tombstone_ttl: float = 600.0

    def retransmits(self, cluster_size: int) -> int:
        """Total transmissions of one message by one node, for a cluster of this size."""
        return self.fanout + math.ceil(self.retransmit_mult * math.log10(cluster_size + 1))

    def hop_budget(self, cluster_size: int) -> int:
        """Hops given to a new message so a rumor can cross a cluster of this size."""
        needed = math.ceil(math.log(max(cluster_size, 2)) / math.log(max(self.fanout, 2)))
        return min(self.max_hops, needed + self.hop_margin)

    def replace(self, **changes: object) -> Config:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


# LAN: the defaults above, tuned for a data-centre network.
LAN = Config()

# LOCAL: a single host or a very fast network; the same rules, shorter timers.
LOCAL = Config(
    heartbeat_interval=0.1,
    suspect_after=1.0,
    suspicion_min=0.25,
    suspicion_max=2.0,
    pushpull_interval=2.0,
    reconnect_interval=2.0,
    join_retry_interval=0.5,
    role_settle=0.5,
)

PROFILES: dict[str, Config] = {"lan": LAN, "local": LOCAL}
