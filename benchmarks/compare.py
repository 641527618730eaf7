"""chatter side by side with HashiCorp Serf and kinship: real processes on 127.0.0.1, same machine, same run.

    python -m benchmarks.compare --n 10 [--n 30] [--repeat 5] [--systems chatter,serf,serf-local,kinship]
                                 [--json out.json] [--log-dir DIR]   (chatter,chatter-sealed: encryption's cost)

For each N, the systems run one after another (never two at once), each through its launcher
in ``benchmarks.peers``, and one table per N is printed. Every figure comes from the rows the
nodes themselves recorded (their own clocks, one host), the same way for every system; the
victims of the stops are the same node names for every system.

join       the seed is started and answers; t0; the N - 1 others are started at once, joining
           through it. Figure: the time at which the last (observer, member) pair turned alive,
           every node seeing every other alive, minus t0 (process start-up included).
idle       after a settle pause and no sooner than ``--idle-after`` (20 s) after the join converged
           (the steady state: chatter's coordinates probe every 1 s for their first 16 probes, then
           every 60 s), with nothing polling the nodes: CPU per node (utime + stime from
           /proc/PID/stat, % of one core) and bytes per second per node on the nodes' ports
           (iptables counters on lo, ``benchmarks._lib.iptables.PortAccounting``: UDP they send plus TCP to or from
           their ports, IP sizes, divided by N).
broadcast  (``--loss P``: with P of the UDP datagrams to the nodes' ports dropped on lo meanwhile)
           ``--messages`` broadcasts, one at a time, each posted through a random node and
           awaited on every node: chatter-inject, ``serf event -coalesce=false``, kinship's
           ``Cluster.broadcast`` via the node's control socket. Latency on a node = its delivery
           row's time - the origin's own row (its delivery for chatter and Serf, the ``sent``
           row written just before ``broadcast()`` for kinship, which does not deliver to the
           origin); the origin itself is left out. Each must arrive exactly once per node.
kill -9    ``--repeat`` times, a different non-seed node each time: time.time(), SIGKILL by PID;
           latency on each survivor = its first ``failed`` row about the victim - that time.
           Then the victim is restarted (same name and port) and the cluster must converge
           again ("restart → all alive again": from the restart to convergence).
graceful   the same with the system's graceful stop (SIGTERM; SIGINT for Serf, which leaves on
           SIGINT only) and ``left`` rows.
false failures  ``failed`` rows about a node that was running (outside every stop-to-restart
           window); reported apart: ``failed`` rows about a node stopped gracefully (its leave
           was missed or came after a failure verdict), and ``suspect`` rows about running nodes.

Serf gets two columns from the same run: ``serf`` from its event handler (what an application
is told, after Serf's member-event coalescing), ``serf[log]`` from the agent's log lines
(when its protocol decided). Exit status 0, or 1 if a system could not be run at all.
"""

from __future__ import annotations

import argparse
import random
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from benchmarks._lib.cli import add_output_args, log_root, new_parser, run_trio, write_json
from benchmarks._lib.cli import say_timed as say
from benchmarks._lib.iptables import IptablesError, LoopbackLoss, PortAccounting, iptables_problem
from benchmarks._lib.nodeapi import Window
from benchmarks._lib.phases import CpuUse, idle_cpu, pick_victims
from benchmarks._lib.stats import fmt, summary
from benchmarks._lib.tables import Figure, Result, dig, main_only, render
from benchmarks.peers import (
    FAILED,
    LEFT,
    SENT,
    SUSPECT,
    USER,
    PeerCluster,
    Row,
    add_systems_arg,
    all_report,
    describe,
    open_cluster,
    parse_systems,
    unavailable,
    versions,
)

# ---------------------------------------------------------------------- phases


async def phase_join(c: PeerCluster, n: int, timeout: float) -> tuple[dict[str, Any], list[str]]:
    t0 = await c.start(n)
    ok = await c.until_converged(timeout)
    up = c.last_up()
    out: dict[str, Any] = {"last_up_s": None if up is None else up - t0, "after_up": {}}
    for source in c.sources:
        t = c.converged_at(source)
        out[source] = None if t is None else t - t0
        out["after_up"][source] = None if t is None or up is None else t - up
    return out, [] if ok else [f"join: not converged within {timeout:g} s"]


async def phase_idle(c: PeerCluster, seconds: float, account: bool) -> dict[str, Any]:
    pids = {n.name: n.pid for n in c.running() if n.pid is not None}
    acct: PortAccounting | None = None
    traffic: dict[str, dict[str, int]] | None = None
    problems: list[str] = []
    try:
        if account:
            try:
                acct = PortAccounting([n.port for n in c.nodes]).__enter__()
                acct.zero()
            except IptablesError as e:
                problems.append(f"no byte counts: {e}")
                acct = None
        use = await idle_cpu(pids, seconds)
        if acct is not None:
            traffic = acct.read()
    finally:
        if acct is not None:
            acct.close()
    return idle_figures(use, traffic, problems)


def idle_figures(use: CpuUse, traffic: dict[str, dict[str, int]] | None, problems: list[str]) -> dict[str, Any]:
    cpu = use.per_process
    elapsed = use.seconds
    out: dict[str, Any] = {
        "seconds": elapsed,
        "cpu": {"per_node": cpu, "mean": statistics.fmean(cpu.values()), **summary(list(cpu.values()))},
        "problems": problems,
    }
    if traffic is not None:
        n = len(cpu)
        out["traffic"] = traffic
        out["bytes_per_node_s"] = (traffic["udp"]["bytes"] + traffic["tcp"]["bytes"]) / n / elapsed
        out["udp_bytes_per_node_s"] = traffic["udp"]["bytes"] / n / elapsed
        out["tcp_bytes_per_node_s"] = traffic["tcp"]["bytes"] / n / elapsed
        out["udp_packets_per_node_s"] = traffic["udp"]["packets"] / n / elapsed
    return out


async def phase_broadcast(c: PeerCluster, count: int, rng: random.Random, timeout: float) -> dict[str, Any]:
    problems: list[str] = []
    messages: list[dict[str, Any]] = []
    tag = f"{c.system}-{len(c.nodes)}-{rng.randrange(1 << 30):x}"
    for i in range(count):
        bid = f"{tag}-{i}"
        origin = rng.choice(c.running())
        lives = c.lives()
        want = {k: v for k, v in lives.items() if c.delivers_to_origin or k != origin.name}
        err = await c.broadcast(origin, bid)
        if err is not None:
            problems.append(f"broadcast {bid} through {origin.name}: {err}")
            continue

        def delivered(bid: str = bid, want: dict[str, int] = want) -> bool:
            return all_report(c.rows, want, USER, bid)

        if not await c.until(delivered, timeout):
            problems.append(f"broadcast {bid}: not delivered everywhere within {timeout:g} s")
        messages.append({"id": bid, "origin": origin.name, "origin_pid": lives[origin.name], "lives": lives})
    await trio.sleep(1.0)  # late duplicates, if any, show up meanwhile
    await c.poll()
    return broadcast_figures(c.rows, messages, problems)


def broadcast_figures(rows: Sequence[Row], messages: list[dict[str, Any]], problems: list[str]) -> dict[str, Any]:
    """Latency per (broadcast, node) from the origin's own row; duplicates are problems."""
    pairs: list[float] = []
    slowest: list[float] = []
    for m in messages:
        mine = [r for r in rows if r.subject == m["id"] and r.kind in (USER, SENT) and r.source == "main"]
        ref = [r.t for r in mine if r.observer == m["origin"] and r.life == m["origin_pid"]]
        if not ref:
            problems.append(f"broadcast {m['id']}: no row from its origin {m['origin']}")
            continue
        t_ref = min(ref)
        got = Counter((r.observer, r.life) for r in mine if r.kind == USER)
        dup = {obs: k for (obs, _), k in got.items() if k > 1}
        if dup:
            problems.append(f"broadcast {m['id']}: delivered more than once on {dup}")
        latency = {
            r.observer: r.t - t_ref
            for r in mine
            if r.kind == USER and r.observer != m["origin"] and m["lives"].get(r.observer) == r.life
        }
        m["latency"] = latency
        pairs += latency.values()
        if latency:
            slowest.append(max(latency.values()))
    return {
        "pairs": summary(pairs),
        "slowest_per_message": summary(slowest),
        "messages": messages,
        "problems": problems,
    }


async def stop_one(
    c: PeerCluster, name: str, sig: signal.Signals, kind: str, timeout: float
) -> tuple[dict[str, Any], list[str]]:
    """Stop node ``name`` with ``sig``; each survivor's first ``kind`` row about it, per source.
    The node is not restarted."""
    victim = c.node(name)
    assert victim.running(), f"{name} is not running"
    await c.poll()
    mark = len(c.rows)
    survivors = {k: v for k, v in c.lives().items() if k != name}
    problems: list[str] = []
    t_kill = time.time()
    victim.kill(sig)
    if not await c.until(lambda: all_report(c.rows[mark:], survivors, kind, name), timeout):
        problems.append(f"{sig.name} {name}: not {kind} on every survivor within {timeout:g} s")
    run: dict[str, Any] = {"victim": name, "t_kill": t_kill, "latency": {}}
    for source in c.sources:
        first: dict[str, float] = {}
        for r in c.rows[mark:]:
            if r.source == source and r.kind == kind and r.subject == name and survivors.get(r.observer) == r.life:
                first.setdefault(r.observer, r.t - t_kill)
        missing = sorted(set(survivors) - set(first))
        if missing and source == "main":
            problems.append(f"{sig.name} {name}: no {kind} row on {missing}")
        run["latency"][source] = first
    try:
        run["exit_status"] = await victim.wait_exit()
    except trio.TooSlowError:
        problems.append(f"{sig.name} {name}: still running 15 s later; SIGKILL")
        victim.kill(signal.SIGKILL)
        run["exit_status"] = await victim.wait_exit()
    return run, problems


async def phase_stops(
    c: PeerCluster,
    victims: Sequence[str],
    sig: signal.Signals,
    kind: str,
    *,
    timeout: float,
    settle: float,
    windows: list[Window],
) -> dict[str, Any]:
    """Each victim in turn: stopped (``stop_one``), restarted, the cluster converged again."""
    runs: list[dict[str, Any]] = []
    problems: list[str] = []
    samples: dict[str, list[float]] = {s: [] for s in c.sources}
    rejoin: list[float] = []
    for name in victims:
        run, probs = await stop_one(c, name, sig, kind, timeout)
        problems += probs
        for source, first in run["latency"].items():
            samples[source] += first.values()
        t_restart = time.time()
        windows.append(Window(name, run["t_kill"], t_restart))
        c.node(name).start()
        if await c.until_converged(timeout):
            t = c.converged_at()
            assert t is not None
            run["rejoin_s"] = t - t_restart
            rejoin.append(t - t_restart)
        else:
            problems.append(f"restart of {name}: not converged within {timeout:g} s")
        runs.append(run)
        await trio.sleep(settle)
    return {
        "samples": {s: summary(v) for s, v in samples.items()},
        "rejoin": summary(rejoin),
        "runs": runs,
        "problems": problems,
    }


def in_windows(rows: Sequence[Row], kind: str, windows: Sequence[Window], source: str) -> list[dict[str, Any]]:
    """``kind`` rows about a node between its stop and its restart."""
    return [
        {"observer": r.observer, "about": r.subject, "t": r.t}
        for r in rows
        if r.kind == kind and r.source == source and any(w.covers(r.subject, r.t) for w in windows)
    ]


def false_rows(rows: Sequence[Row], kind: str, windows: Sequence[Window], source: str) -> list[dict[str, Any]]:
    """``kind`` rows about a node that was running (outside every stop-to-restart window)."""
    return [
        {"observer": r.observer, "about": r.subject, "t": r.t}
        for r in rows
        if r.kind == kind and r.source == source and not any(w.covers(r.subject, r.t) for w in windows)
    ]


# ---------------------------------------------------------------------- one system, one size


async def run_system(system: str, n: int, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    rng = random.Random(f"{args.seed}-{n}")  # the same victims and origins for every system
    res: dict[str, Any] = {"system": system, "n": n, "started_at": time.time(), "problems": []}
    windows: dict[str, list[Window]] = {"dead": [], "left": []}  # SIGKILL / graceful stop to restart
    timeout = args.timeout + n
    async with open_cluster(system, log_dir) as c:
        say(f"{system} N={n}: starting")
        res["join_s"], probs = await phase_join(c, n, timeout)
        t_joined = trio.current_time()
        res["problems"] += probs
        if probs:
            return res
        await trio.sleep(args.settle)
        wait = args.idle_after - (trio.current_time() - t_joined)
        if wait > 0:  # past the start-up transients (chatter's coordinate warm-up: 16 probes, 1 s apart)
            await trio.sleep(wait)
        say(f"{system} N={n}: idle window {args.idle:g} s")
        res["idle"] = await phase_idle(c, args.idle, args.account)
        res["problems"] += res["idle"].pop("problems")
        say(f"{system} N={n}: {args.messages} broadcasts" + (f" at {args.loss:.0%} loss" if args.loss else ""))
        if args.loss:
            with LoopbackLoss([node.port for node in c.nodes], args.loss) as loss:
                res["broadcast"] = await phase_broadcast(c, args.messages, rng, timeout)
                res["broadcast"]["datagrams_dropped"] = loss.dropped()
        else:
            res["broadcast"] = await phase_broadcast(c, args.messages, rng, timeout)
        res["problems"] += res["broadcast"]["problems"]
        stops = (("dead", signal.SIGKILL, FAILED, "kill -9"), ("left", c.graceful_signal, LEFT, "graceful stop"))
        for key, sig, kind, label in stops:
            say(f"{system} N={n}: {args.repeat} x {label}" + (f" ({sig.name})" if key == "left" else ""))
            victims = [v.name for v in pick_victims(c.nodes[1:], args.repeat, rng)]
            res[key] = await phase_stops(
                c, victims, sig, kind, timeout=timeout, settle=args.settle, windows=windows[key]
            )
            res["problems"] += res[key]["problems"]
        await trio.sleep(args.settle)
        await c.poll()
        false_reports(c, res, windows["dead"] + windows["left"], windows["left"])
    return res


def false_reports(c: PeerCluster, res: dict[str, Any], stopped: list[Window], graceful: list[Window]) -> None:
    """failed rows about a node that was running; and about a node stopped gracefully (its leave missed)."""
    res["false_failures"] = {s: false_rows(c.rows, FAILED, stopped, s) for s in c.sources}
    res["leave_as_failed"] = {s: in_windows(c.rows, FAILED, graceful, s) for s in c.sources}
    res["false_suspicions"] = {s: len(false_rows(c.rows, SUSPECT, stopped, s)) for s in c.suspect_sources}
    res["sources"] = list(c.sources)
    res["rows"] = describe(c.rows)
    res["graceful_signal"] = c.graceful_signal.name
    if hasattr(c, "log") and getattr(c.log, "problems", None):
        res["problems"] += c.log.problems


# ---------------------------------------------------------------------- report


def rejoin_max(res: Result) -> float | None:
    values = [res.get(k, {}).get("rejoin", {}).get("max") for k in ("dead", "left")]
    return max((v for v in values if v is not None), default=None)


def _stop(key: str, stat: str) -> Callable[[Result, str], str]:
    def cell(r: Result, source: str) -> str:
        samples = dig(r, key, "samples", source)
        return fmt(samples[stat]) if samples else "-"

    return cell


def _once(*keys: str, digits: int = 3) -> Callable[[Result, str], str]:
    """A figure measured once per run, at ``r[k1][k2]...``."""
    return lambda r, source: main_only(source, fmt(dig(r, *keys), digits))


def _count(key: str) -> Callable[[Result, str], str]:
    return lambda r, s: str(len(r[key][s])) if key in r else "-"


FIGURES: list[Figure] = [
    ("join: all see all alive (s)", lambda r, s: fmt(dig(r, "join_s", s))),
    ("  of which: last process start-up (s)", _once("join_s", "last_up_s")),
    ("  join after the last process up (s)", lambda r, s: fmt(dig(r, "join_s", "after_up", s))),
    ("kill -9 → failed, median (s)", _stop("dead", "median")),
    ("kill -9 → failed, max (s)", _stop("dead", "max")),
    ("graceful stop → left, median (s)", _stop("left", "median")),
    ("graceful stop → left, max (s)", _stop("left", "max")),
    ("restart → all alive again, max (s)", lambda r, s: main_only(s, fmt(rejoin_max(r)))),
    ("broadcast → delivered, median (s)", _once("broadcast", "pairs", "median")),
    ("broadcast → delivered, max (s)", _once("broadcast", "pairs", "max")),
    ("idle CPU per node, mean (% core)", _once("idle", "cpu", "mean", digits=2)),
    ("idle CPU per node, max (% core)", _once("idle", "cpu", "max", digits=2)),
    ("idle bytes/s per node (UDP+TCP)", _once("idle", "bytes_per_node_s", digits=0)),
    ("idle UDP datagrams/s per node", _once("idle", "udp_packets_per_node_s", digits=1)),
    ("false failures, live nodes (rows)", _count("false_failures")),
    ("graceful stop reported failed (rows)", _count("leave_as_failed")),
    (
        "suspicions of live nodes (rows)",
        lambda r, s: str(r["false_suspicions"][s]) if s in r.get("false_suspicions", {}) else "-",
    ),
    ("problems", lambda r, s: main_only(s, str(len(r["problems"])))),
]


def table(n: int, results: Sequence[Result], args: argparse.Namespace) -> str:
    lines = [
        f"N = {n}: {args.repeat} kills and {args.repeat} graceful stops per system, {args.messages} broadcasts, "
        f"idle window {args.idle:g} s" + (f"; broadcasts at {args.loss:.0%} UDP loss" if args.loss else ""),
        *render(f"N = {n}", 38, results, FIGURES),
        "  '=' same figure as the column to its left (same run); '-' not measured or not available",
    ]
    if args.loss:
        lines.append("  datagrams dropped during the broadcasts: " + ", ".join(
            f"{r['system']} {dig(r, 'broadcast', 'datagrams_dropped')}" for r in results))  # fmt: skip
    for res in results:
        for p in res["problems"]:
            lines.append(f"  {res['system']}: PROBLEM: {p}")
        for s, ff in res.get("false_failures", {}).items():
            for e in ff:
                lines.append(f"  {res['system']}[{s}]: FALSE FAILURE: {e['observer']} declared {e['about']} failed")
        for s, rows in res.get("leave_as_failed", {}).items():
            for e in rows:
                lines.append(
                    f"  {res['system']}[{s}]: {e['observer']} reported {e['about']} failed during its graceful stop"
                )
    return "\n".join(lines)


# ---------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = new_parser(
        "compare",
        "chatter, Serf and kinship side by side on 127.0.0.1: join, detection, leave, "
        "broadcast, idle CPU and bytes, false failures.",
    )
    p.add_argument("--n", type=int, action="append", help="cluster size; repeatable (default: 10)")
    p.add_argument("--repeat", type=int, default=5, help="kills and graceful stops per system and size (default: 5)")
    p.add_argument("--messages", type=int, default=10, help="broadcasts per system and size (default: 10)")
    add_systems_arg(p)
    p.add_argument("--idle", type=float, default=20.0, help="idle window in seconds (default: 20)")
    p.add_argument("--settle", type=float, default=2.0, help="pause after each convergence (s, default: 2)")
    p.add_argument(
        "--idle-after",
        type=float,
        default=20.0,
        help="the idle window starts no sooner than this long after every node saw every other alive: the "
        "steady state, past start-up transients such as chatter's coordinate warm-up (s, default: 20; 0: at once)",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="longest wait for one step, plus N seconds")
    p.add_argument("--seed", type=int, default=1, help="seed for the victims and broadcast origins (default: 1)")
    p.add_argument("--no-bytes", dest="account", action="store_false", help="skip the iptables byte counts")
    p.add_argument(
        "--loss",
        type=float,
        default=0.0,
        help="during the broadcasts, drop this share of the UDP datagrams sent to the nodes' ports on lo (iptables)",
    )
    add_output_args(p, "keep the nodes' logs and event files here")
    return p


async def amain(args: argparse.Namespace, systems: list[str], log_root: Path) -> int:
    status = 0
    out: dict[str, Any] = {"args": vars(args), "versions": versions(systems), "sizes": []}
    for n in args.n or [10]:
        results = []
        for system in systems:
            log_dir = log_root / f"n{n}" / system
            log_dir.mkdir(parents=True, exist_ok=True)
            try:
                res = await run_system(system, n, args, log_dir)
            except (RuntimeError, OSError, trio.TooSlowError) as e:
                say(f"{system} N={n}: could not run: {e!r}")
                res = {"system": system, "n": n, "problems": [f"could not run: {e!r}"]}
                status = 1
            results.append(res)
        print(table(n, results, args) + "\n", flush=True)
        out["sizes"].append({"n": n, "results": results})
        if args.json:  # after each size, so a later failure does not lose the earlier figures
            write_json(args.json, out)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    systems = parse_systems(parser, args.systems)
    if any(n < 3 for n in args.n or []):
        parser.error("--n must be at least 3")
    if args.repeat < 1 or args.messages < 1 or args.idle <= 0:
        parser.error("--repeat and --messages must be >= 1, --idle > 0")
    missing = unavailable(systems)
    if missing:
        print(f"compare: {missing[0]}: {missing[1]}", file=sys.stderr)
        return 2
    if not 0 <= args.loss < 1:
        parser.error("--loss must be in [0, 1)")
    if args.account or args.loss:
        why = iptables_problem()
        if why:
            print(f"compare: no byte counts ({why}); run as root with iptables, or pass --no-bytes", file=sys.stderr)
            return 2
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    with log_root(args.log_dir, "chatter-compare-") as root:
        status = run_trio(amain, args, systems, root)  # on Ctrl-C, the launchers have stopped their nodes
    return 130 if status is None else status


if __name__ == "__main__":
    sys.exit(main())
