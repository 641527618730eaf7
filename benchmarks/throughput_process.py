"""Throughput (a)(ii): ingest of one real chatterd process, fed UDP by sender processes.

One chatterd (chatterd.testing), told about ``--peers`` fake members whose addresses are
sockets of this benchmark that nobody reads (the node's forwards are dropped by the kernel
there, at no cost to the node), kept alive by their heartbeats every 0.2 s. Sender processes
(``--senders``, each its own process) blast datagrams at it at each rate of ``--rates`` in
turn, ``--step`` seconds each; the node's /v1/health counters (datagrams_in, delivered,
duplicates) before and after, and the kernel's drop counter of its socket (/proc/net/udp),
give what it processed against what was sent: processed = datagrams_in once it stopped
moving, minus the keep-alive heartbeats. A rate is sustained when < 1 % was lost; a series
stops at the first rate that is not. Series (``--series``): ``new-debug`` new rumors with a
DebugMessage payload (logged at info by every node that delivers it), ``new-user`` new rumors
with a user payload (not logged at info), ``dup`` duplicates of delivered rumors, ``hb``
heartbeats. With py-spy installed (``--no-py-spy`` to skip), the node is then sampled for
``--spy-seconds`` under new-debug traffic at the sustained rate.

    python -m benchmarks.throughput --parts process [--rates 5000,10000,...] [--series new-debug,new-user,dup,hb]
                                    [--step 3] [--senders 1] [--no-py-spy] [--json out.json] [--log-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio

from benchmarks._lib.blast import FakePeers
from benchmarks._lib.cli import REPO, say
from benchmarks._lib.feeds import Addr, rumor_datagrams
from benchmarks._lib.nodeapi import counters
from benchmarks._lib.phases import CpuSample, CpuUse, cpu_use
from benchmarks._lib.procfs import udp_drops
from benchmarks._lib.pyspy import py_spy, spy_lines
from benchmarks._lib.stats import highest_rate
from chatterd.testing import HOST, LocalNode, local_cluster

TARGET_INGEST = 20_000  # datagrams/s one node must ingest
LOSS_LIMIT = 0.01  # a blast rate is sustained when less than this fraction was lost
POOL = 2000  # distinct rumors a duplicates blast repeats
SERIES = {  # name → (kind, payload)
    "new-debug": ("new", "debug"),  # new rumors, DebugMessage payload (each delivery logged at info)
    "new-user": ("new", "user"),  # new rumors, a user payload (delivery logged at debug: filtered out)
    "dup": ("dup", "debug"),  # duplicates of already delivered rumors
    "hb": ("hb", "debug"),  # heartbeats
}


@dataclass
class Step:
    series: str
    rate: int
    sent: int
    send_seconds: float
    processed: int
    processed_in_window: int
    kernel_drops: int | None
    delivered: int
    duplicates: int
    cpu_pct: float
    sender_cpu_pct: float  # includes the sender's start-up (building the datagrams)
    machine_busy_pct: float  # both cores
    drain_s: float
    suspicions: int
    starved: int  # times the node saw its own timers run > max_timer_lateness late
    datagrams_out: int  # what it sent meanwhile (forwards, heartbeats)
    sender_errors: int

    @property
    def lost(self) -> int:
        return max(0, self.sent - self.processed)

    @property
    def loss(self) -> float:
        return self.lost / self.sent if self.sent else 0.0

    @property
    def ok(self) -> bool:
        return self.loss < LOSS_LIMIT

    @property
    def timely(self) -> bool:
        """Kept up and its timers ran on time: it also forwarded and sent its heartbeats."""
        return self.ok and self.starved == 0


@dataclass
class BlastWindow:
    """The node's counters just before the blast and at its end, and its CPU meanwhile."""

    c0: Counter[str]
    x0: int  # datagrams the fake peers had sent besides the blast, at c0
    d0: int | None  # the kernel's drops at c0
    cpu: CpuUse
    c_window: Counter[str]
    x_window: int

    def ours(self, c: Counter[str], extra: int) -> int:
        """Datagrams the node took in from the blast, at counters ``c``."""
        return c["datagrams_in"] - self.c0["datagrams_in"] - (extra - self.x0)


def blast_specs(
    node: LocalNode,
    peers: FakePeers,
    kind: str,
    payload: str,
    rate: int,
    seconds: float,
    prefix: str,
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """One spec per sender process (``blast.blast_worker``), all starting at the same time."""
    senders = max(1, args.senders)
    start_at = time.time() + args.worker_startup
    return [
        {
            "host": HOST,
            "port": node.port,
            "peers": [[name, addr[1]] for name, addr in peers.peers],
            "rate": rate / senders,
            "seconds": seconds,
            "kind": kind,
            "payload": payload,
            "prefix": prefix if kind == "dup" else f"{prefix[:12]}{w:04x}",
            "pool": POOL,
            "start_at": start_at,
        }
        for w in range(senders)
    ]


async def send_pool(peers: FakePeers, target: Addr, payload: str, prefix: str) -> None:
    """Make every message of a duplicates blast seen once, at a gentle pace."""
    for i, (data, _) in enumerate(rumor_datagrams(POOL, 1, peers.peers, payload=payload, prefix=prefix)):
        peers.send(data, target)
        if i % 100 == 99:
            await trio.sleep(0.01)
    await trio.sleep(0.5)


async def run_sender(spec: dict[str, Any], results: list[dict[str, Any]]) -> None:
    proc = await trio.run_process(
        [sys.executable, "-m", "benchmarks.throughput", "--blast-worker", json.dumps(spec)],
        capture_stdout=True,
        check=True,
        cwd=REPO,
    )
    results.append(json.loads(proc.stdout))


async def measure_window(node: LocalNode, peers: FakePeers, start_at: float, seconds: float) -> BlastWindow:
    assert node.pid is not None
    await trio.sleep(max(0.0, start_at - time.time() - 0.3))
    c0, x0, d0 = await counters(node), peers.extra_sent, udp_drops(node.port)
    await trio.sleep(max(0.0, start_at - time.time()))
    cpu0 = CpuSample.take({"node": node.pid})
    await trio.sleep(seconds)
    cpu = cpu_use(cpu0, CpuSample.take({"node": node.pid}))
    return BlastWindow(c0, x0, d0, cpu, await counters(node), peers.extra_sent)


async def drain(node: LocalNode, peers: FakePeers, w: BlastWindow) -> tuple[int, Counter[str], float]:
    """Until the node's count stops moving (besides the keepalive heartbeats): (count, counters, seconds)."""
    t_end = time.monotonic()
    last = w.ours(w.c_window, w.x_window)
    stable = 0
    c1 = w.c_window
    while stable < 2 and time.monotonic() - t_end < 15:
        await trio.sleep(0.25)
        x1 = peers.extra_sent
        c1 = await counters(node)
        now_count = w.ours(c1, x1)
        stable = stable + 1 if now_count <= last else 0  # a heartbeat in flight can make it dip by a few
        last = max(last, now_count)
    return last, c1, max(0.0, time.monotonic() - t_end - 0.5)


async def blast_step(
    node: LocalNode,
    peers: FakePeers,
    series: str,
    kind: str,
    payload: str,
    rate: int,
    args: argparse.Namespace,
    seconds: float | None = None,
) -> Step:
    seconds = seconds or args.step
    prefix = uuid.uuid4().hex[:16]
    if kind == "dup":
        await send_pool(peers, (HOST, node.port), payload, prefix)
    specs = blast_specs(node, peers, kind, payload, rate, seconds, prefix, args)
    results: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:
        for spec in specs:
            nursery.start_soon(run_sender, spec, results)
        w = await measure_window(node, peers, specs[0]["start_at"], seconds)
    last, c1, drain_s = await drain(node, peers, w)
    d1 = udp_drops(node.port)
    sent = sum(r["sent"] for r in results)
    secs = max(r["seconds"] for r in results)
    c0 = w.c0
    return Step(
        series=series,
        rate=rate,
        sent=sent,
        send_seconds=secs,
        processed=min(sent, last),
        processed_in_window=w.ours(w.c_window, w.x_window),
        kernel_drops=None if w.d0 is None or d1 is None else d1 - w.d0,
        delivered=c1.get("delivered", 0) - c0.get("delivered", 0),
        duplicates=c1.get("duplicates", 0) - c0.get("duplicates", 0),
        cpu_pct=w.cpu.per_process["node"],
        sender_cpu_pct=100.0 * sum(r["cpu_s"] for r in results) / secs,
        machine_busy_pct=w.cpu.machine_pct,
        drain_s=drain_s,
        suspicions=c1["suspicions"] - c0["suspicions"],
        starved=c1["starved"] - c0["starved"],
        datagrams_out=c1["datagrams_out"] - c0["datagrams_out"],
        sender_errors=sum(r["errors"] for r in results),
    )


async def run_series(node: LocalNode, peers: FakePeers, series: str, args: argparse.Namespace) -> list[Step]:
    """The rates of ``--rates`` in turn, up to the first that is not sustained."""
    kind, payload = SERIES[series]
    steps: list[Step] = []
    for rate in args.rates:
        say(f"process: {series} at {rate:,}/s for {args.step:g} s")
        step = await blast_step(node, peers, series, kind, payload, rate, args)
        steps.append(step)
        say(
            f"  sent {step.sent:,}, processed {step.processed:,} ({100 * step.loss:.2f} % lost), "
            f"CPU {step.cpu_pct:.0f} %"
        )
        peers.register((HOST, node.port))  # in case the blast made it suspect one of them
        await trio.sleep(args.pause)
        if not step.ok:
            break
    return steps


async def bench_process(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"series": {}, "sustained": {}, "timely": {}, "py_spy": None}
    peers = FakePeers(args.peers)
    (log_dir / "process").mkdir(parents=True, exist_ok=True)
    try:
        async with local_cluster(1, extra_args=["--profile", args.profile], log_dir=log_dir / "process") as cluster:
            node = cluster.nodes[0]
            target = (HOST, node.port)
            peers.register(target)
            members = await node.members()
            alive = sum(1 for m in members.values() if m["state"] == "alive")
            if alive != args.peers + 1:
                raise RuntimeError(f"the node sees {alive} live members, expected {args.peers + 1}")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peers.keepalive, target)
                for series in args.series:
                    steps = await run_series(node, peers, series, args)
                    out["series"][series] = [
                        asdict(s) | {"loss": s.loss, "ok": s.ok, "timely": s.timely} for s in steps
                    ]
                    out["sustained"][series] = highest_rate(steps, lambda s: s.rate, lambda s: s.ok)
                    out["timely"][series] = highest_rate(steps, lambda s: s.rate, lambda s: s.timely)
                if args.py_spy and shutil.which("py-spy"):
                    rate = out["sustained"].get("new-debug") or args.rates[0]
                    out["py_spy"] = await py_spy_profile(node, peers, rate, args, log_dir)
                nursery.cancel_scope.cancel()
            out["counters"] = await counters(node)
    finally:
        peers.close()
    return out


async def py_spy_profile(
    node: LocalNode, peers: FakePeers, rate: int, args: argparse.Namespace, log_dir: Path
) -> dict[str, Any]:
    """Sample the node with py-spy while it ingests new rumors (DebugMessage) at ``rate``."""
    assert node.pid is not None
    say(f"process: py-spy on the node under {rate:,} new rumors/s for {args.spy_seconds:g} s")
    result: dict[str, Any] = {}

    async def spy() -> None:
        result.update(
            await py_spy(node.pid or 0, args.spy_seconds - 1, log_dir / "py-spy-node.txt", args.worker_startup + 0.5)
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(spy)
        step = await blast_step(node, peers, "py-spy", "new", "debug", rate, args, seconds=args.spy_seconds)
    return result | {"rate": rate, "step": asdict(step)}


def step_line(series: str, s: dict[str, Any]) -> str:
    kd = "-" if s["kernel_drops"] is None else f"{s['kernel_drops']:,}"
    return (
        f"{series:<12}{s['rate']:>9,}{s['sent']:>10,}{s['processed']:>11,}{100 * s['loss']:>7.2f}%{kd:>13}"
        f"{s['delivered']:>11,}{s['duplicates']:>9,}{s['datagrams_out'] / max(1, s['processed']):>7.2f}"
        f"{s['starved']:>8}{s['cpu_pct']:>8.0f}%{s['machine_busy_pct']:>7.0f}%  "
        f"{'ok' if s['ok'] else 'LOST'}"
    )


def report_process(res: dict[str, Any]) -> list[str]:
    lines = [
        "(a)(ii) ingest of one real chatterd process (UDP from a sender process; counters from /v1/health)",
        f"{'series':<12}{'rate/s':>9}{'sent':>10}{'processed':>11}{'lost':>8}{'kernel drops':>13}"
        f"{'delivered':>11}{'dups':>9}{'out/in':>7}{'starved':>8}{'node CPU':>9}{'machine':>8}  ok",
    ]
    lines += [step_line(series, s) for series, steps in res["series"].items() for s in steps]
    lines.append(
        "  processed: the node's datagrams_in (minus keep-alive heartbeats) once it stopped moving; lost = sent -"
        " processed; out/in: datagrams the node sent per datagram processed; starved: times its timers ran > 0.3 s"
        " late (its loop drained the socket that long without running timers: no heartbeats, no forwarding);"
        " node CPU: % of one core; machine: both cores (node, sender, anything else)"
    )
    for series, rate in res["sustained"].items():
        flag = ""
        if series == "new-debug":
            flag = f"   target >= {TARGET_INGEST:,}: {'ok' if rate >= TARGET_INGEST else 'MISS'}"
        timely = res.get("timely", {}).get(series)
        lines.append(
            f"  sustained (< 1 % lost), {series}: {rate:,} datagrams/s{flag}; and with no timer late: {timely:,}"
        )
    spy = res.get("py_spy")
    if spy:
        lines += spy_lines(spy, f"py-spy on the node under {spy.get('rate', 0):,} new rumors/s")
    return lines
