"""Failure-detection, leave and delivery latency, and idle CPU, of real chatterd processes on loopback.

    python -m benchmarks.latency --n 5 --n 20 --repeat 5 [--json figures.json]

For each cluster size N, one cluster of N processes (chatterd.harness.local_cluster), in order:

idle CPU   once converged, utime + stime of every node from /proc/PID/stat over an idle window
           (nothing polls the nodes meanwhile), as % of one core.
delivered  K messages posted one at a time with chatter-inject into random nodes; each is
           awaited on every node before the next. Latency on a node = its row's received_at -
           the row's sent_at (the origin's clock when it accepted the message: one host, one
           clock). The origin's own delivery is left out of the figures (it is ~0 by
           construction) but is part of the exactly-once check.
dead       kill -9 of a random non-seed node (time.time() taken just before os.kill); once
           every survivor shows it dead, latency on a survivor = received_at of its
           member-failed event about it - the kill time.
left       the same with SIGTERM and member-leave events.

After each kill the node is restarted (same name and port, a new incarnation) and the cluster
must converge again before the next repeat; each repeat picks a different node while there
are enough of them. Every member-failed event that any node recorded is checked against the
SIGKILLs: one about a node that was not SIGKILLed at that moment is a false failure.

The event rows live in each node's memory, so they are read incrementally (?since=SEQ) and
always before a node is stopped. Exit status: 0, or 1 when a correctness check failed
(false failures, a message not delivered exactly once everywhere, a missing event); the
latency targets are reported, not enforced.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from chatterd.harness import LocalCluster, LocalNode, local_cluster

TARGETS = {"dead": 3.0, "left": 0.5, "delivered": 0.1, "idle_cpu": 1.0}
POLL = 0.2  # seconds between polls of the nodes while waiting (the figures come from event timestamps)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------- event rows


class EventLog:
    """Every event row of every node process seen so far, as (observer name, row)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, dict[str, Any]]] = []
        self.problems: list[str] = []
        self._last: dict[int, int] = {}  # pid → last seq read from that process

    async def scan(self, nodes: Sequence[LocalNode]) -> None:
        for node in nodes:
            if not node.running() or node.pid is None:
                continue
            last = self._last.get(node.pid, 0)
            rows = None
            for _ in range(3):
                rows = await node.try_get(f"/v1/events?since={last}")
                if rows is not None:
                    break
                await trio.sleep(0.1)
            if rows is None:
                self.problems.append(f"could not read the events of {node.name} (pid {node.pid})")
                continue
            if not rows:
                continue
            if rows[0]["seq"] != last + 1:
                self.problems.append(f"{node.name}: event rows {last + 1}..{rows[0]['seq'] - 1} lost (buffer full)")
            self.rows.extend((node.name, r) for r in rows)
            self._last[node.pid] = rows[-1]["seq"]

    def since(self, mark: int) -> list[tuple[str, dict[str, Any]]]:
        return self.rows[mark:]


@dataclass
class Window:
    """A node SIGKILLed at t_kill and started again at t_restart (Unix times)."""

    name: str
    t_kill: float
    t_restart: float


# ---------------------------------------------------------------------- helpers


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    """Poll ``check`` until true; False if ``timeout`` seconds went by first."""
    with trio.move_on_after(timeout):
        while not await check():
            await trio.sleep(POLL)
        return True
    return False


async def all_show(cluster: LocalCluster, observers: Sequence[LocalNode], name: str, state: str) -> bool:
    for obs in observers:
        if (await cluster.states(obs)).get(name) != state:
            return False
    return True


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()  # fields from the 3rd (state) on
    return int(fields[11]) + int(fields[12])  # fields 14 and 15


def summary(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "median": None, "max": None}
    return {"count": len(values), "median": statistics.median(values), "max": max(values)}


def pick_victims(nodes: Sequence[LocalNode], repeat: int, rng: random.Random) -> list[LocalNode]:
    """``repeat`` random nodes, all different while there are enough of them."""
    out: list[LocalNode] = []
    while len(out) < repeat:
        out += rng.sample(list(nodes), min(len(nodes), repeat - len(out)))
    return out


# ---------------------------------------------------------------------- phases


async def measure_idle_cpu(nodes: Sequence[LocalNode], seconds: float) -> dict[str, float]:
    pids = {n.name: n.pid for n in nodes if n.pid is not None}
    before = {name: cpu_ticks(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    await trio.sleep(seconds)
    after = {name: cpu_ticks(pid) for name, pid in pids.items()}
    elapsed = time.monotonic() - t0
    return {name: 100.0 * (after[name] - before[name]) / CLK_TCK / elapsed for name in pids}


async def measure_delivery(
    cluster: LocalCluster, log: EventLog, count: int, rng: random.Random, timeout: float
) -> dict[str, Any]:
    nodes = cluster.running()
    names = {n.name for n in nodes}
    await log.scan(nodes)
    mark = len(log.rows)
    messages: list[dict[str, Any]] = []
    problems: list[str] = []

    async def delivered_everywhere(mid: str) -> bool:
        await log.scan(nodes)
        return {obs for obs, r in log.since(mark) if r["id"] == mid} >= names

    for i in range(count):
        target = rng.choice(nodes)
        body = json.dumps({"DebugMessage": {"text": f"latency benchmark {i}"}})
        proc = await trio.run_process(
            [sys.executable, "-m", "chatter_inject", target.addr, body],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        if proc.returncode != 0:
            problems.append(f"message {i}: chatter-inject into {target.name} failed: {proc.stderr.decode().strip()}")
            continue
        mid, accepted_by = proc.stdout.decode().split()
        if not await wait_until(functools.partial(delivered_everywhere, mid), timeout):
            problems.append(f"message {mid}: not delivered everywhere within {timeout:g} s")
        messages.append({"id": mid, "injected_into": target.name, "accepted_by": accepted_by})

    await trio.sleep(1.0)  # late duplicates, if any, show up meanwhile
    await log.scan(nodes)
    rows = [(obs, r) for obs, r in log.since(mark) if r["kind"] == "debug"]
    pairs: list[float] = []
    per_message_max: list[float] = []
    for m in messages:
        mine = [(obs, r) for obs, r in rows if r["id"] == m["id"]]
        copies = Counter(obs for obs, _ in mine)
        bad = {name: copies.get(name, 0) for name in sorted(names) if copies.get(name, 0) != 1}
        if bad:
            problems.append(f"message {m['id']}: deliveries per node {bad} (want exactly 1 on each)")
        latency = {obs: r["received_at"] - r["sent_at"] for obs, r in mine if obs != r["origin"]}
        hops = {obs: r["hops"] for obs, r in mine}
        m.update(latency=latency, hops=hops, copies=dict(copies))
        pairs += latency.values()
        if latency:
            per_message_max.append(max(latency.values()))
    known = {m["id"] for m in messages}
    strays = [r["id"] for _, r in rows if r["id"] not in known]
    if strays:
        problems.append(f"{len(strays)} debug deliveries of messages not sent by the benchmark")
    return {
        "pairs": summary(pairs),
        "per_message_max": summary(per_message_max),
        "messages": messages,
        "problems": problems,
    }


async def measure_stop(
    cluster: LocalCluster,
    log: EventLog,
    victims: Sequence[LocalNode],
    sig: signal.Signals,
    state: str,
    kind: str,
    *,
    timeout: float,
    settle: float,
    windows: list[Window],
) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    problems: list[str] = []
    latencies: list[float] = []
    want_rc = 0 if sig == signal.SIGTERM else -sig
    for victim in victims:
        assert victim.running() and victim.pid is not None, f"{victim.name} is not running"
        survivors = [n for n in cluster.running() if n is not victim]
        await log.scan(cluster.running())  # everything so far, the victim's rows included
        mark = len(log.rows)
        pid = victim.pid
        t_kill = time.time()
        os.kill(pid, sig)
        shown = await wait_until(functools.partial(all_show, cluster, survivors, victim.name, state), timeout)
        if not shown:
            problems.append(f"{sig.name} {victim.name}: not {state} on every survivor within {timeout:g} s")
        await log.scan(survivors)
        found: dict[str, list[dict[str, Any]]] = {}
        for obs, r in log.since(mark):
            if r["kind"] == kind and r["origin"] == victim.name:
                found.setdefault(obs, []).append(r)
        per_node = {obs: rs[0]["received_at"] - t_kill for obs, rs in found.items()}
        missing = sorted(n.name for n in survivors if n.name not in found)
        repeated = sorted(obs for obs, rs in found.items() if len(rs) > 1)
        if missing:
            problems.append(f"{sig.name} {victim.name}: no {kind} event on {missing}")
        if repeated:
            problems.append(f"{sig.name} {victim.name}: more than one {kind} event on {repeated}")
        latencies += per_node.values()
        rc = await victim.wait_exit()
        if rc != want_rc:
            problems.append(f"{sig.name} {victim.name}: exit status {rc}, expected {want_rc}")
        t_restart = time.time()
        if sig == signal.SIGKILL:
            windows.append(Window(victim.name, t_kill, t_restart))
        victim.start()
        converged = await cluster.wait_converged(timeout=20 + len(cluster.nodes))
        runs.append(
            {
                "victim": victim.name,
                "pid": pid,
                "t_kill": t_kill,
                "latency": per_node,
                "detail": {obs: rs[0]["payload"] for obs, rs in found.items()},
                "missing": missing,
                "exit_status": rc,
                "reconverged_s": converged,
            }
        )
        await trio.sleep(settle)
    return {"samples": summary(latencies), "runs": runs, "problems": problems}


def false_events(log: EventLog, kind: str, windows: Sequence[Window]) -> list[dict[str, Any]]:
    """Events of ``kind`` about a node that was not SIGKILLed at the time they were recorded."""
    out = []
    for obs, r in log.rows:
        if r["kind"] != kind:
            continue
        t = r["received_at"]
        if not any(w.name == r["origin"] and w.t_kill <= t <= w.t_restart for w in windows):
            out.append({"observer": obs, "about": r["origin"], "received_at": t, "payload": r["payload"]})
    return out


# ---------------------------------------------------------------------- one cluster size


async def run_size(n: int, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    extra = ["--profile", args.profile]
    log_dir = None
    if args.log_dir is not None:
        log_dir = Path(args.log_dir) / f"n{n}"
        log_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    async with local_cluster(n, extra_args=extra, log_dir=log_dir) as cluster:
        await trio.sleep(args.settle)
        log = EventLog()
        windows: list[Window] = []
        print(f"N={n}: converged; idle CPU over {args.idle:g} s", file=sys.stderr)
        cpu = await measure_idle_cpu(cluster.running(), args.idle)

        print(f"N={n}: {args.messages} messages", file=sys.stderr)
        delivery = await measure_delivery(cluster, log, args.messages, rng, timeout=args.timeout)

        non_seeds = cluster.nodes[1:]
        print(f"N={n}: {args.repeat} x kill -9", file=sys.stderr)
        dead = await measure_stop(
            cluster,
            log,
            pick_victims(non_seeds, args.repeat, rng),
            signal.SIGKILL,
            "dead",
            "member-failed",
            timeout=args.timeout,
            settle=args.settle,
            windows=windows,
        )
        print(f"N={n}: {args.repeat} x SIGTERM", file=sys.stderr)
        left = await measure_stop(
            cluster,
            log,
            pick_victims(non_seeds, args.repeat, rng),
            signal.SIGTERM,
            "left",
            "member-leave",
            timeout=args.timeout,
            settle=args.settle,
            windows=windows,
        )
        await log.scan(cluster.running())
        false_failures = false_events(log, "member-failed", windows)
        false_suspicions = false_events(log, "member-suspect", windows)
    return {
        "n": n,
        "profile": args.profile,
        "started_at": t_start,
        "idle_cpu": {"per_node": cpu, "mean": statistics.fmean(cpu.values()), **summary(list(cpu.values()))},
        "delivered": delivery,
        "dead": dead,
        "left": left,
        "false_failures": false_failures,
        "false_suspicions": false_suspicions,
        "event_problems": log.problems,
        "notes": [f"only {n - 1} non-seed nodes for {args.repeat} repeats: some were stopped more than once"]
        if args.repeat > n - 1
        else [],
    }


# ---------------------------------------------------------------------- report


def _fmt(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def report(res: dict[str, Any], args: argparse.Namespace) -> tuple[str, bool]:
    """The table for one cluster size, and whether every correctness check passed."""
    n = res["n"]
    d = res["delivered"]
    rows = [
        ("dead after kill -9 (s)", res["dead"]["samples"], TARGETS["dead"], 3),
        ("left after SIGTERM (s)", res["left"]["samples"], TARGETS["left"], 3),
        ("delivered, per (message, node) (s)", d["pairs"], TARGETS["delivered"], 4),
        ("delivered, slowest node per message (s)", d["per_message_max"], TARGETS["delivered"], 4),
        ("idle CPU per node (% of a core)", res["idle_cpu"], TARGETS["idle_cpu"], 2),
    ]
    lines = [
        f"N = {n}  (profile {res['profile']}, {args.repeat} kills of each kind, {args.messages} messages, "
        f"idle window {args.idle:g} s)",
        f"{'figure':<42}{'samples':>8}{'median':>10}{'max':>10}{'target':>10}  ok",
    ]
    for label, s, target, digits in rows:
        ok = "-" if s["max"] is None else ("ok" if s["max"] <= target else "MISS")
        lines.append(
            f"{label:<42}{s['count']:>8}{_fmt(s['median'], digits):>10}{_fmt(s['max'], digits):>10}"
            f"{'<= ' + str(target):>10}  {ok}"
        )
    nf = len(res["false_failures"])
    lines.append(f"{'false failures (count)':<42}{'':>8}{'':>10}{nf:>10}{'= 0':>10}  {'ok' if nf == 0 else 'MISS'}")
    lines.append(f"  idle CPU mean per node: {res['idle_cpu']['mean']:.2f} % of a core")
    problems = res["delivered"]["problems"] + res["dead"]["problems"] + res["left"]["problems"] + res["event_problems"]
    ok_delivery = not res["delivered"]["problems"]
    lines.append(f"  every message delivered exactly once on every node: {'yes' if ok_delivery else 'NO'}")
    lines += [f"  note: {note}" for note in res["notes"]]
    if res["false_suspicions"]:
        about = Counter(e["about"] for e in res["false_suspicions"])
        lines.append(f"  suspicions of nodes that were not killed (refuted or not): {dict(about)}")
    for e in res["false_failures"]:
        lines.append(f"  FALSE FAILURE: {e['observer']} declared {e['about']} failed ({e['payload']})")
    lines += [f"  PROBLEM: {p}" for p in problems]
    return "\n".join(lines), not problems and nf == 0


# ---------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.latency",
        description="Measure detection, leave and delivery latency and idle CPU of real chatterd processes.",
    )
    p.add_argument("--n", type=int, action="append", help="cluster size; repeatable (default: 5 and 20)")
    p.add_argument("--repeat", type=int, default=5, help="kills of each kind per cluster size (default: 5)")
    p.add_argument("--messages", type=int, default=20, help="messages injected per cluster size (default: 20)")
    p.add_argument("--idle", type=float, default=10.0, help="idle CPU window in seconds (default: 10)")
    p.add_argument("--profile", choices=["lan", "local"], default="lan", help="chatterd timing profile (default: lan)")
    p.add_argument("--timeout", type=float, default=30.0, help="longest wait for one detection or delivery (s)")
    p.add_argument("--settle", type=float, default=1.0, help="pause after each convergence (s, default: 1)")
    p.add_argument("--seed", type=int, default=None, help="seed for the choice of victims and inject targets")
    p.add_argument("--log-dir", default=None, help="keep the nodes' logs here (default: a temporary directory)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the raw figures to PATH")
    return p


async def amain(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    results = []
    all_ok = True
    for n in args.n or [5, 20]:
        res = await run_size(n, args, rng)
        results.append(res)
        text, ok = report(res, args)
        all_ok &= ok
        print(text + "\n", flush=True)
        if args.json:  # after each size, so a later failure does not lose the earlier figures
            out = {"args": vars(args), "targets": TARGETS, "results": results}
            Path(args.json).write_text(json.dumps(out, indent=1))
    return 0 if all_ok else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if any(n < 2 for n in args.n or []):
        build_parser().error("--n must be at least 2 (one seed and one node to kill)")
    if args.repeat < 1 or args.messages < 1 or args.idle <= 0:
        build_parser().error("--repeat and --messages must be >= 1, --idle > 0")
    try:
        return trio.run(amain, args)
    except KeyboardInterrupt:  # the harness has stopped the nodes on the way out
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
