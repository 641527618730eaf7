"""Failure-detection, leave and delivery latency, and idle CPU, of real chatterd processes on loopback.

    python -m benchmarks.latency --n 5 --n 20 --repeat 5 [--json figures.json]

For each cluster size N, one cluster of N processes (chatterd.testing.local_cluster), in order:

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from benchmarks._lib.cli import add_output_args, add_profile_arg, new_parser, run_trio, say, write_json
from benchmarks._lib.inject import chatter_inject
from benchmarks._lib.nodeapi import EventLog, Window, false_events
from benchmarks._lib.phases import idle_cpu, pick_victims, wait_until
from benchmarks._lib.stats import fmt, summary
from chatterd.testing import LocalCluster, LocalNode, local_cluster

TARGETS = {"dead": 3.0, "left": 0.5, "delivered": 0.1, "idle_cpu": 1.0}
STOPS = (  # (label, signal, the state survivors must show, the event each must record)
    ("kill -9", signal.SIGKILL, "dead", "member-failed"),
    ("SIGTERM", signal.SIGTERM, "left", "member-leave"),
)


async def all_show(cluster: LocalCluster, observers: Sequence[LocalNode], name: str, state: str) -> bool:
    for obs in observers:
        if (await cluster.states(obs)).get(name) != state:
            return False
    return True


# ---------------------------------------------------------------------- phases


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
        proc = await chatter_inject(target.addr, json.dumps({"DebugMessage": {"text": f"latency benchmark {i}"}}))
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
    return delivery_figures(messages, rows, names, problems)


def delivery_figures(
    messages: list[dict[str, Any]], rows: Sequence[tuple[str, dict[str, Any]]], names: set[str], problems: list[str]
) -> dict[str, Any]:
    """Latency per (message, node), and whether each message arrived exactly once on each node."""
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


async def stop_one(
    cluster: LocalCluster, log: EventLog, victim: LocalNode, sig: signal.Signals, state: str, kind: str, timeout: float
) -> tuple[dict[str, Any], list[str], float]:
    """Stop ``victim`` with ``sig``; each survivor's ``kind`` event about it, and its latency.
    Returns (the run so far, its problems, the time of the stop); the victim is not restarted."""
    assert victim.running() and victim.pid is not None, f"{victim.name} is not running"
    survivors = [n for n in cluster.running() if n is not victim]
    await log.scan(cluster.running())  # everything so far, the victim's rows included
    mark = len(log.rows)
    pid = victim.pid
    problems: list[str] = []
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
    missing = sorted(n.name for n in survivors if n.name not in found)
    repeated = sorted(obs for obs, rs in found.items() if len(rs) > 1)
    if missing:
        problems.append(f"{sig.name} {victim.name}: no {kind} event on {missing}")
    if repeated:
        problems.append(f"{sig.name} {victim.name}: more than one {kind} event on {repeated}")
    run = {
        "victim": victim.name,
        "pid": pid,
        "t_kill": t_kill,
        "latency": {obs: rs[0]["received_at"] - t_kill for obs, rs in found.items()},
        "detail": {obs: rs[0]["payload"] for obs, rs in found.items()},
        "missing": missing,
    }
    return run, problems, t_kill


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
    """Each victim in turn: stopped (``stop_one``), its exit status checked, restarted, the
    cluster converged again. SIGKILLs are recorded in ``windows`` (for the false failures)."""
    runs: list[dict[str, Any]] = []
    problems: list[str] = []
    latencies: list[float] = []
    want_rc = 0 if sig == signal.SIGTERM else -sig
    for victim in victims:
        run, probs, t_kill = await stop_one(cluster, log, victim, sig, state, kind, timeout)
        problems += probs
        latencies += run["latency"].values()
        rc = await victim.wait_exit()
        if rc != want_rc:
            problems.append(f"{sig.name} {victim.name}: exit status {rc}, expected {want_rc}")
        t_restart = time.time()
        if sig == signal.SIGKILL:
            windows.append(Window(victim.name, t_kill, t_restart))
        victim.start()
        converged = await cluster.wait_converged(timeout=20 + len(cluster.nodes))
        runs.append(run | {"exit_status": rc, "reconverged_s": converged})
        await trio.sleep(settle)
    return {"samples": summary(latencies), "runs": runs, "problems": problems}


# ---------------------------------------------------------------------- one cluster size


async def run_size(n: int, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    extra = ["--profile", args.profile]
    log_dir = None
    if args.log_dir is not None:
        log_dir = Path(args.log_dir) / f"n{n}"
        log_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    res: dict[str, Any] = {"n": n, "profile": args.profile, "started_at": t_start}
    async with local_cluster(n, extra_args=extra, log_dir=log_dir) as cluster:
        await trio.sleep(args.settle)
        log = EventLog()
        windows: list[Window] = []
        say(f"N={n}: converged; idle CPU over {args.idle:g} s")
        pids = {node.name: node.pid for node in cluster.running() if node.pid is not None}
        cpu = (await idle_cpu(pids, args.idle)).per_process
        res["idle_cpu"] = {"per_node": cpu, "mean": statistics.fmean(cpu.values()), **summary(list(cpu.values()))}

        say(f"N={n}: {args.messages} messages")
        res["delivered"] = await measure_delivery(cluster, log, args.messages, rng, timeout=args.timeout)

        for label, sig, state, kind in STOPS:
            say(f"N={n}: {args.repeat} x {label}")
            victims = pick_victims(cluster.nodes[1:], args.repeat, rng)
            res[state] = await measure_stop(
                cluster, log, victims, sig, state, kind, timeout=args.timeout, settle=args.settle, windows=windows
            )
        await log.scan(cluster.running())
        res["false_failures"] = false_events(log, "member-failed", windows)
        res["false_suspicions"] = false_events(log, "member-suspect", windows)
    res["event_problems"] = log.problems
    res["notes"] = (
        [f"only {n - 1} non-seed nodes for {args.repeat} repeats: some were stopped more than once"]
        if args.repeat > n - 1
        else []
    )
    return res


# ---------------------------------------------------------------------- report


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
            f"{label:<42}{s['count']:>8}{fmt(s['median'], digits):>10}{fmt(s['max'], digits):>10}"
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
    p = new_parser("latency", "Measure detection, leave and delivery latency and idle CPU of real chatterd processes.")
    p.add_argument("--n", type=int, action="append", help="cluster size; repeatable (default: 5 and 20)")
    p.add_argument("--repeat", type=int, default=5, help="kills of each kind per cluster size (default: 5)")
    p.add_argument("--messages", type=int, default=20, help="messages injected per cluster size (default: 20)")
    p.add_argument("--idle", type=float, default=10.0, help="idle CPU window in seconds (default: 10)")
    add_profile_arg(p)
    p.add_argument("--timeout", type=float, default=30.0, help="longest wait for one detection or delivery (s)")
    p.add_argument("--settle", type=float, default=1.0, help="pause after each convergence (s, default: 1)")
    p.add_argument("--seed", type=int, default=None, help="seed for the choice of victims and inject targets")
    add_output_args(p, "keep the nodes' logs here (default: a temporary directory)")
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
            write_json(args.json, {"args": vars(args), "targets": TARGETS, "results": results})
    return 0 if all_ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if any(n < 2 for n in args.n or []):
        parser.error("--n must be at least 2 (one seed and one node to kill)")
    if args.repeat < 1 or args.messages < 1 or args.idle <= 0:
        parser.error("--repeat and --messages must be >= 1, --idle > 0")
    status = run_trio(amain, args)  # on Ctrl-C, the harness has stopped the nodes on the way out
    return 130 if status is None else status


if __name__ == "__main__":
    sys.exit(main())
