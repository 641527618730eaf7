"""Throughput (a)(i): ingest of the protocol core alone, in this process, on one core.

One ``Node`` that knows ``--peers`` fake members is fed pre-encoded datagrams the way
chatterd/runtime.py feeds it: for each turn of the loop, ``receive()`` every datagram of the
turn, then ``handle_timers()``, ``take_outgoing()``, ``take_events()``, ``next_deadline()``,
with ``now`` from the monotonic clock. Workloads: new rumors (distinct ids, a small
DebugMessage each, from the fake peers, hop budget left so the node forwards them), one per
datagram and one datagram per turn (a lightly loaded node), 32 datagrams per turn (a loaded
node drains its socket in bursts), six rumors packed per datagram (what forwarding nodes
send); duplicates only (the same datagrams again); heartbeats. Figures: datagrams/s,
messages/s, outgoing datagrams per incoming one, the broadcast queue left over, the rate over
the first and the last tenth of the run (a falling rate means some cost grows with the
backlog), and, decoded from what the node sent, the share of the new messages forwarded at
least once and the transmissions per message while it was being fed.

    python -m benchmarks.throughput --parts core [--profile lan] [--peers 9] [--core-count 40000] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks._lib.cli import say
from benchmarks._lib.feeds import Addr, core_node, core_workloads, drive, fake_peers
from chatterd.core import wire
from chatterd.core.config import PROFILES, Config


@dataclass
class CoreRun:
    name: str
    datagrams: int
    messages: int
    seconds: float
    out_datagrams: int
    queue_left: int
    first_tenth: float  # datagrams/s over the first tenth of the feed
    last_tenth: float  # and over the last tenth
    delivered: int
    duplicates: int
    forwarded_share: float  # of the new messages fed, share forwarded at least once during the run
    transmissions: float  # mean transmissions per new message during the run
    retransmits: int  # what the configuration asks for (Config.retransmits)

    @property
    def dgram_rate(self) -> float:
        return self.datagrams / self.seconds

    @property
    def msg_rate(self) -> float:
        return self.messages / self.seconds


def forwarding(outgoing: Sequence[bytes], ids: set[str]) -> tuple[float, float]:
    """(share of the fed messages forwarded at least once, mean transmissions per fed message)."""
    counts: Counter[str] = Counter()
    for data in outgoing:
        for msg in wire.decode(data).m:
            if isinstance(msg, wire.Rumor) and msg.id in ids:
                counts[msg.id] += 1
    if not ids:
        return 0.0, 0.0
    return len(counts) / len(ids), sum(counts.values()) / len(ids)


def tenths(n: int, checkpoints: Sequence[float]) -> tuple[float, float]:
    """Datagrams/s over the first and over the last tenth of a feed of ``n``."""
    tenth = max(1, n // 10)
    cps = checkpoints
    first = tenth / cps[0] if cps and cps[0] > 0 else float("nan")
    last = tenth / (cps[-1] - cps[-2]) if len(cps) >= 2 and cps[-1] > cps[-2] else float("nan")
    return first, last


def run_core_workload(
    name: str,
    config: Config,
    peers: Sequence[tuple[str, Addr]],
    feed: Sequence[tuple[bytes, Addr]],
    per: int,
    batch: int,
    *,
    prefeed: bool = False,
) -> CoreRun:
    node = core_node(config, peers)
    if prefeed:  # duplicates: the node has seen every message once already (untimed)
        drive(node, feed, 1)
    s0 = Counter(node.stats)
    gc.collect()
    outgoing: list[bytes] = []
    seconds, out, cps = drive(node, feed, batch, outgoing)
    fwd_share, fwd_mean = 0.0, 0.0
    if per and not prefeed:
        ids = {m.id for data, _ in feed for m in wire.decode(data).m if isinstance(m, wire.Rumor)}
        fwd_share, fwd_mean = forwarding(outgoing, ids)
    del outgoing
    n = len(feed)
    first, last = tenths(n, cps)
    return CoreRun(
        name=name,
        datagrams=n,
        messages=n * per,
        seconds=seconds,
        out_datagrams=out,
        queue_left=len(node.queue),  # Node internals: the broadcast queue's length
        first_tenth=first,
        last_tenth=last,
        delivered=node.stats["delivered"] - s0["delivered"],
        duplicates=node.stats["duplicates"] - s0["duplicates"],
        forwarded_share=fwd_share,
        transmissions=fwd_mean,
        retransmits=config.retransmits(len(peers) + 1),
    )


def bench_core(args: argparse.Namespace) -> list[CoreRun]:
    config = PROFILES[args.profile]
    peers = fake_peers(args.peers)
    runs = []
    for name, make, per, batch, prefeed in core_workloads(args.core_count, peers):
        feed = make()
        say(f"core: {name} ({len(feed)} datagrams)")
        runs.append(run_core_workload(name, config, peers, feed, per, batch, prefeed=prefeed))
    return runs


def as_json(runs: Sequence[CoreRun]) -> list[dict[str, Any]]:
    return [asdict(r) | {"datagrams_per_s": r.dgram_rate, "messages_per_s": r.msg_rate} for r in runs]


def report_core(runs: Sequence[CoreRun]) -> list[str]:
    lines = [
        "(a)(i) ingest of the protocol core alone (Node.receive + handle_timers + take_outgoing, one core)",
        f"{'workload':<52}{'datagrams/s':>12}{'messages/s':>12}{'us/dgram':>10}{'out/in':>8}"
        f"{'queue left':>11}{'1st 10%':>9}{'last 10%':>9}{'fwd once':>9}{'tx/msg':>8}",
    ]
    for r in runs:
        fwd = (
            f"{100 * r.forwarded_share:>8.0f}%{r.transmissions:>8.2f}"
            if r.messages and r.delivered
            else f"{'-':>9}{'-':>8}"
        )
        lines.append(
            f"{r.name:<52}{r.dgram_rate:>12,.0f}{r.msg_rate:>12,.0f}{1e6 / r.dgram_rate:>10.1f}"
            f"{r.out_datagrams / r.datagrams:>8.2f}{r.queue_left:>11,}{r.first_tenth:>9,.0f}{r.last_tenth:>9,.0f}" + fwd
        )
        want = r.messages if "new" in r.name else 0
        if r.delivered != want:
            lines.append(f"  PROBLEM: {r.delivered} delivered, expected {want}")
    lines.append(
        "  out/in: datagrams sent per datagram received; queue left: messages still waiting for retransmission"
    )
    lines.append("  at the end; 1st/last 10%: datagrams/s over the first and the last tenth of the feed; fwd once:")
    lines.append(
        "  share of the new messages the node forwarded at least once while being fed; tx/msg: transmissions per new"
    )
    if runs:
        lines.append(f"  message while being fed (the configuration asks for {runs[0].retransmits} in all).")
    return lines
