"""Every default of chatter, with the reason for it, in one place.

:class:`Config` holds the protocol's tunables; named profiles (``lan``, ``local``) bundle
the timings, the way memberlist's DefaultLANConfig / DefaultLocalConfig do, and command-line
options override single fields. Below it: the fixed limits of the protocol core, then the
defaults of the shells (lock, health check, handlers, persistence, operator commands,
chatter-inject). The core imports only this module's protocol part; the shells read the rest.
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
    # Under --expect, a candidate sends every member a lease request this often, and counts
    # the members that answered in the last suspect_after - 2 lease intervals as its quorum
    # (core/election.py): a holder cut off into a minority steps down before the majority
    # can declare it dead. Its own interval, shorter than the heartbeats': only candidates
    # with --expect pay for it.
    lease_interval: float = 0.25

    # --- failure detection ------------------------------------------------------------
    # Each node sends a heartbeat to `monitors` peers (its successors on a hash ring) every
    # heartbeat_interval. The load per node is monitors / heartbeat_interval datagrams per
    # second whatever the cluster size: 3 per second (issue #13's idle target is 4; it was 12
    # with heartbeats every 0.25 s). Rarer heartbeats do not slow detection down, the probes
    # below keep them from raising false suspicions (docs/benchmarks.md, issue #13).
    heartbeat_interval: float = 1.0
    monitors: int = 3
    # A monitor that hears nothing from a node for suspect_after seconds (and no answer to its
    # probes) suspects it. The seeds' failover systems take over after 2 s of silence; 1.75 s
    # plus the shortest suspicion timeout puts a death everywhere at 2.25 s at worst.
    suspect_after: float = 1.75
    # Lifeguard-style suspicion timeout: suspicion_max with one accuser, shrinking
    # logarithmically to suspicion_min when every monitor of the node agrees.
    suspicion_min: float = 0.5
    suspicion_max: float = 4.0
    # Local health: if our own timers fire later than this, we were starved (CPU, GC, a
    # paused process) and we do not count the stall against the nodes we monitor.
    max_timer_lateness: float = 0.3
    # Probe before suspecting (core/probe.py, issue #13). A monitor that has not heard a
    # member for probe_after seconds pings it (SWIM's direct probe), and the member answers
    # with a heartbeat; from the second round on, every
    # probe_interval, it also asks probe_relays other members (the member's other monitors
    # first) to check it (ping-req): a relay that heard it within probe_after vouches for it
    # at once, else pings it and vouches when it answers. Only a member still silent after
    # suspect_after is suspected, so a lost heartbeat costs a probe rather than a suspicion,
    # and heartbeats may be several times rarer for the same detection time. probe_after must
    # leave one heartbeat interval of silence plus a margin for the heartbeat in flight.
    probe_before_suspect: bool = True
    probe_after: float = 1.1
    probe_interval: float = 0.15
    probe_relays: int = 2

    # --- membership -------------------------------------------------------------------
    # Push-pull anti-entropy with one random live peer every pushpull_interval seconds: the
    # backstop of gossip, which reaches every node on its own. 30 s as memberlist's and Serf's
    # LAN default (5 s cost a third of the idle byte budget: a ~450-byte digest each time).
    pushpull_interval: float = 30.0
    # Every reconnect_interval we also try one random dead member, so healed partitions merge:
    # each of N nodes tries, so a cluster finds the other side within about 30/N seconds.
    reconnect_interval: float = 30.0
    # Seeds given with --join are retried this often until one answers.
    join_retry_interval: float = 1.0
    # Dead and left members are forgotten after this long (Serf's reap interval is 24 h;
    # shorter here so long-running test clusters stay small).
    reap_after: float = 3600.0
    # Device tombstones (removed devices) are kept this long so late gossip cannot revive them.
    tombstone_ttl: float = 600.0

    # --- network coordinates ----------------------------------------------------------
    # Vivaldi coordinates (core/coordinates.py) from a round-trip probe to the next member
    # along the ring every rtt_interval (core/rtt.py: its first probes go faster). 60 s: issue
    # #13's idle budget (300 bytes/s per node) had ~5 left with a dead member known (294.7 in
    # the simulator, N = 30); a probe and its answer take ~225 bytes, 3.8 bytes/s at 60 s.
    # False: no probes, no coordinates, the detector's timeouts as without them.
    coordinates: bool = True
    rtt_interval: float = 60.0

    def retransmits(self, cluster_size: int) -> int:
        """Total transmissions of one message by one node, for a cluster of this size."""
        return self.fanout + math.ceil(self.retransmit_mult * math.log10(cluster_size + 1))

    def hop_budget(self, cluster_size: int) -> int:
        """Hops given to a new message so a rumor can cross a cluster of this size."""
        needed = math.ceil(math.log(max(cluster_size, 2)) / math.log(max(self.fanout, 2)))
        return min(self.max_hops, needed + self.hop_margin)

    @property
    def unknown_holder_hold(self) -> float:
        """How long a claim whose holder we have no record of holds off the election of its
        role (core/election.py), from when the claim arrived: a real holder's record reaches
        us by then (push-pull follows a join within ~2 s, and a member we miss is at worst
        gossiped alive within suspect_after), and a phantom holder's never does. After it the
        claim is treated as a claim by a member that is gone: a candidate takes over, one epoch
        above it."""
        return self.suspect_after + self.role_settle

    def replace(self, **changes: object) -> Config:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


# LAN: the defaults above, tuned for a data-centre network.
LAN = Config()

# LOCAL: a single host or a very fast network; the same rules, shorter timers: detection in
# about 1.25 s, for 30 heartbeats per second per node (and no probes: a lost heartbeat on
# loopback is rare, and 10 of them fit in suspect_after).
LOCAL = Config(
    heartbeat_interval=0.1,
    probe_before_suspect=False,
    lease_interval=0.1,
    suspect_after=1.0,
    suspicion_min=0.25,
    suspicion_max=2.0,
    pushpull_interval=2.0,
    reconnect_interval=2.0,
    join_retry_interval=0.5,
    role_settle=0.5,
    rtt_interval=1.0,
)

PROFILES: dict[str, Config] = {"lan": LAN, "local": LOCAL}


# ==================================================================================== limits
# Fixed limits of the protocol core: sizes and counts that bound the work one datagram or one
# timer may cause. Not tunables: every node of a cluster must agree on them.

# Room kept in a datagram around its messages: {"v":1,"from":"<name>","m":[...]}.
ENVELOPE_OVERHEAD = 64
# Room kept, beyond a node's own Alive message, in a datagram: a state chunk's header and a
# longer sender name, so that its record (with its tags) fits in anyone's datagram.
RECORD_ROOM = 128
# Room kept in a State or Have chunk for its header and the sender's name.
CHUNK_HEADER_ROOM = 64
# Datagrams one flush may send to one target: a loaded node drains its backlog in a few turns
# without one flush monopolising the loop.
MAX_FLUSH_DATAGRAMS = 16
# Repair (core/repair.py): streams and gaps listed in one summary (the decoder rejects more),
# gaps remembered per stream (older ones are given up), and rumors sent in answer to one
# summary (a peer far behind catches up over several rounds).
MAX_SUMMARY_STREAMS = 256
MAX_SUMMARY_GAPS = 64
MAX_GAPS_KEPT = 1024
MAX_REPAIR_RUMORS = 256
# State chunks (datagrams) sent in answer to one join, digest or want: a big cluster's state
# (thousands of records) goes over several push-pull rounds, a window of chunks each, instead
# of one request making a node send megabytes.
MAX_STATE_CHUNKS = 32
# chatter-inject request ids remembered (for idempotent retries) for seen_ttl seconds.
MAX_INJECT_IDS = 10_000
# Names of members reaped in the last reap_after that a node remembers, so that a peer that has
# not reaped them yet cannot hand them back (core/membership.py): as many as a large cluster
# loses in that time; beyond it the oldest are forgotten first.
FORGOTTEN_MAX = 10_000
# Integers on the wire (incarnations, epochs, clocks, sequence numbers...) are 0..2^63-1: a
# signed 64-bit integer, what every JSON implementation of a peer can hold.
WIRE_INT_MAX = 2**63 - 1
# News that would raise a known member's incarnation, or a known role's epoch, by more than
# this is implausible and dropped (counted): an honest node raises its own by one at a
# refutation or a tags change, and by its down time in ms at a restart (2^32 ms is 50 days;
# a member down longer is reaped after reap_after and known no more). A first sighting may
# carry up to FIRST_SIGHT_MAX (2^62: 146 million years of ms), which leaves 2^62 of room
# above it: a forger needs 2^30 datagrams to exhaust it, one step each (see core/state.py).
PLAUSIBLE_STEP = 2**32
FIRST_SIGHT_MAX = 2**62
# A node's Lamport clock (core/rumors.py) follows the clocks of the rumors it receives up to
# 2^61 only: a rumor forged at FIRST_SIGHT_MAX (the most a rumor may carry) cannot push the
# cluster's clocks to where the next honest rumors would be refused; 2^61 messages would be
# needed to climb from here to there, one at a time.
LAMPORT_ADOPT_MAX = 2**61
# Members erased by `chatterd force-leave --prune` (core/forceleave.py): each leaves a
# tombstone, kept reap_after seconds (as long as another node may still hold the member's
# record), so that old news or a push-pull record cannot bring it back. At most this many;
# past that the oldest goes first (a prune is an operator's act: thousands would be odd).
MAX_PRUNED = 1024
# Probes one node relays for others at once (core/probe.py: ping-req); more are refused.
MAX_RELAYED_PROBES = 64
# Tries at drawing a random peer other than ourselves before giving up for this round.
RANDOM_PEER_TRIES = 8

# ==================================================================================== shells
# --- the etcd role lock (chatterd/lock/) ------------------------------------------------
ETCD_PORT = 2379  # etcd's client port
# A dead holder's roles are free again at most this long after its death (--lock-ttl).
LOCK_TTL = 5.0
# The longest any one call to etcd may take: a hung etcd never blocks the loops.
LOCK_HTTP_TIMEOUT = 1.0
# Between attempts at a role held elsewhere, and at etcd while it is down.
LOCK_RETRY_INTERVAL = 0.5
# While a role we won is still held by another node (a dead holder's lease running out), we
# try every LOCK_WAIT_INTERVAL for up to LOCK_FAST_WAIT_TTLS TTLs, then every
# LOCK_RETRY_INTERVAL: a dead holder's lease ends within a TTL of its death (plus etcd's
# expiry sweep, every 0.5 s), and each try is two small requests from the one node waiting.
LOCK_WAIT_INTERVAL = 0.1
LOCK_FAST_WAIT_TTLS = 2
# Keep-alives per TTL: two can be lost before we step down.
LOCK_KEEPALIVES_PER_TTL = 3
# Step down this fraction of the TTL after sending the last keep-alive that succeeded: the
# server's lease outlives it by at least the rest, which covers clock-rate differences.
LOCK_STEP_DOWN_FRACTION = 0.8

# --- the health check (--check) ---------------------------------------------------------
# Every 3 s: a failing application gives up its roles within a few seconds, at the cost of
# one short process per interval. A check that runs longer than 10 s counts as failing.
CHECK_INTERVAL = 3.0
CHECK_TIMEOUT = 10.0

# --- event handlers (--event-handler) ---------------------------------------------------
# Events waiting for a handler beyond which new ones are dropped (and counted): a stuck
# handler must not grow the node's memory. A handler still running after 30 s is killed.
HANDLER_QUEUE = 1000
HANDLER_TIMEOUT = 30.0

# --- the node's event buffer (GET /v1/events) -------------------------------------------
EVENT_BUFFER = 2000
# After a leave, let the leave datagrams go out before the socket closes.
LEAVE_LINGER = 0.05

# --- persistence (--data-dir) -----------------------------------------------------------
# Look for changes every second; save a new incarnation at once, other changes (peers) at
# most every 5 s. Keep at most 256 peers, and join through at most 8 of them at restart.
PERSIST_CHECK_INTERVAL = 1.0
PERSIST_PEERS_INTERVAL = 5.0
PERSIST_MAX_PEERS = 256
PERSIST_JOIN_PEERS = 8
# The state file is read only if it is a regular file (not a symlink, FIFO or device) of at
# most 64 KiB: what we write is a few KiB (256 peers, 512 bytes of tags), and a bigger file
# is not ours; reading it must neither block (a FIFO) nor fill the memory (/dev/zero).
PERSIST_MAX_FILE = 64 * 1024

# --- seeds from DNS (--join NAME:PORT, dns+, dnssrv+; chatterd/seeds.py) ----------------
# Resolved every 5 s while not joined or alone (a cluster restarted elsewhere is found in seconds).
RESOLVE_INTERVAL = 5.0

# --- operator commands (chatterd members, events, leave...) -----------------------------
CTL_REQUEST_TIMEOUT = 5.0  # one API request: the node answers in milliseconds
CTL_LEAVE_TIMEOUT = 10.0  # how long `leave` waits for the daemon to exit (it takes ~0.1 s)

# --- HTTP API (chatterd.api, chatterd.httpauth) ------------------------------------------
# A request body (PUT /v1/tags is under 1 KiB) is read in chunks up to this bound, then 413:
# a 100 MB upload never sits in the node's memory.
HTTP_MAX_BODY = 64 * 1024
# The whole body must arrive within this time (a client trickling bytes holds a connection
# and nothing else; it gets 408 then).
HTTP_BODY_TIMEOUT = 10.0
# Request line and headers: hypercorn's h11 buffer bound (its default is 16 KiB).
HTTP_MAX_HEADERS = 16 * 1024

# --- chatter-inject ---------------------------------------------------------------------
# Retry every 0.2 s until the node acknowledges, for at most 5 s; datagrams and payload
# nesting are held to the node's own defaults (max_datagram, max_payload_depth).
INJECT_TIMEOUT = 5.0
INJECT_RETRY = 0.2
# A request is padded to at least 512 bytes: a node answers an address that is not a member's
# with at most the bytes it received (no reflection), and its acknowledgement or refusal
# (with a reason cut to 200 characters) fits in that for node names up to ~100 characters.
INJECT_MIN_DATAGRAM = 512
INJECT_NACK_ERROR_MAX = 200

# --- the protocol loop (chatterd/loopguard.py) -----------------------------------------
# A step of the protocol loop that raises is logged (one traceback per second at most, with
# a count of the ones left out) and counted. While the timers keep raising, the loop waits
# 0.05 s, doubling to 1 s, between tries instead of spinning on a deadline in the past; after
# 20 failures in a row (about 16 s) the node exits with status 70 (EX_SOFTWARE), like the
# watchdog, so that a supervisor restarts it.
LOOP_ERROR_LOG_INTERVAL = 1.0
LOOP_BACKOFF_MIN = 0.05
LOOP_BACKOFF_MAX = 1.0
LOOP_FAILURES_FATAL = 20
LOOP_FAILURE_EXIT = 70

# ================================================================================ sealing
# Encrypted, authenticated gossip (core/seal.py, core/keyring.py; --encrypt, --keyring-file).
# AES-GCM keys of 16, 24 or 32 bytes (AES-128/192/256), given as base64.
KEY_SIZES = (16, 24, 32)
# A sealed datagram: version (1) + key id (4) + nonce (12) + [boot id (8) + JSON] + tag (16):
# 41 bytes more than the plaintext; a node with a keyring builds datagrams this much smaller.
SEAL_OVERHEAD = 41
# Replay window per sender boot: the last 1024 sequence numbers are remembered (IPsec's
# anti-replay window is 32-1024); older ones are refused. A datagram reordered by more than
# 1024 later datagrams of the same sender is lost, which gossip tolerates.
REPLAY_WINDOW = 1024
# Senders whose replay windows are kept (least recently heard forgotten first): named senders
# (nodes) and unnamed ones (chatter-inject clients, one per run), bounded separately so a
# flood of inject clients cannot push the nodes' windows out.
REPLAY_MAX_NODES = 4096
REPLAY_MAX_CLIENTS = 1024
# Keys in one keyring: what a keys answer lists must fit in one datagram (16 base64 keys take
# ~750 bytes). A rotation needs two; Serf's answers hold about as many (1 KiB answer limit).
MAX_KEYS = 16
# The longest --label (memberlist's label limit): it is associated data, never sent.
MAX_LABEL = 255
# The environment variable that gives --encrypt's key (chatterd and chatter-inject), so that
# the key need not appear in the process list.
ENCRYPT_KEY_ENV = "CHATTER_ENCRYPT_KEY"

# ================================================================================ queries
# A question put to every member, answered by each to the one who asked (core/query.py: the
# keyring operations of `chatterd keys`). The asker waits QUERY_TIMEOUT for the answers by
# default, and asks a member that has not answered again, directly, at each quarter of it
# (a lost datagram costs a retry, not an answer). A query may ask for QUERY_TIMEOUT_MAX at
# most: it bounds how long every node remembers its id (to answer once).
QUERY_TIMEOUT = 3.0
QUERY_TIMEOUT_MAX = 60.0
# Queries one node waits on at once, and query ids each node remembers.
MAX_PENDING_QUERIES = 16
MAX_QUERY_IDS = 10_000
# Longest query id and name, and the longest error text in an answer.
MAX_QUERY_ID = 64
MAX_QUERY_NAME = 128
QUERY_ERROR_MAX = 200

# ================================================================================ user queries
# `chatterd query NAME` (core/userquery.py), as Serf's: the default timeout grows with the
# cluster like Serf's GossipInterval * QueryTimeoutMult * ceil(log10(N + 1)). Serf's gossip
# interval (200 ms) paces its dissemination; ours (Config.gossip_interval, 10 ms) is a
# retransmit flush, and a responder is a process (a shell forked per query, tens of ms, more
# on a loaded host): the unit is the larger of gossip_interval * 16 and USER_QUERY_UNIT,
# 1 s per decade of members (1 s up to 9 members, 2 s up to 99, 3 s up to 999).
USER_QUERY_TIMEOUT_MULT = 16
USER_QUERY_UNIT = 1.0
# Request payload and response, in UTF-8 bytes: Serf's QuerySizeLimit and
# QueryResponseSizeLimit (1 KiB each); both fit one datagram with their envelope.
QUERY_DATA_MAX = 1024
QUERY_RESPONSE_MAX = 1024
# Filters a query carries: member names (--node) and tag patterns (--tag KEY=REGEX), each
# pattern at most MAX_TAG_REGEX characters, matched with a time budget (a hostile pattern
# must not stall the node): QUERY_REGEX_BUDGET seconds per pattern.
MAX_QUERY_NODES = 32
MAX_QUERY_TAGS = 8
MAX_TAG_REGEX = 128
QUERY_REGEX_BUDGET = 0.002
# A responder also sends its answer through up to this many other members (Serf's relay
# factor, at most 5 there too): a lossy link to the asker costs a relay, not the answer.
MAX_RELAY_FACTOR = 5
# User queries one node asks at once; queries its handlers answer at once (beyond it the node
# answers "busy"); answers one asked query records (acks and responses each).
MAX_PENDING_USER_QUERIES = 16
MAX_ANSWERING = 64
MAX_QUERY_ANSWERS = 10_000
# A user query's name: what --event-handler query:NAME=... can name.
USER_QUERY_NAME_MAX = 64
# Query handlers (--event-handler query:NAME=COMMAND) running at once on a node: apart from
# the event handlers, so that a slow event handler never makes a query time out.
QUERY_HANDLERS_AT_ONCE = 4
