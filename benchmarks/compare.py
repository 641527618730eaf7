"""chatter side by side with HashiCorp Serf and kinship: real processes on 127.0.0.1, same machine, same run.

    python -m benchmarks.compare --n 10 [--n 30] [--repeat 5] [--systems chatter,serf,serf-local,kinship]
                                 [--json out.json] [--log-dir DIR]

For each N, the systems run one after another (never two at once), each through its launcher
in ``benchmarks.peers``, and one table per N is printed. Every figure comes from the rows the
nodes themselves recorded (their own clocks, one host), the same way for every system; the
victims of the stops are the same node names for every system.

join       the seed is started and answers; t0; the N - 1 others are started at once, joining
           through it. Figure: the time at which the last (observer, member) pair turned alive,
           every node seeing every other alive, minus t0 (process start-up included).
idle       after a settle pause, with nothing polling the nodes: CPU per node (utime + stime from
           /proc/PID/stat, % of one core) and bytes per second per node on the nodes' ports
           (iptables counters on lo, ``benchmarks.netacct``: UDP they send plus TCP to or from
           their ports, IP sizes, divided by N).
broadcast  ``--messages`` broadcasts, one at a time, each posted through a random node and
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
import json
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from benchmarks.latency import CLK_TCK, Window, cpu_ticks, summary
from benchmarks.netacct import AccountingError, PortAccounting, iptables_problem
from benchmarks.peers import (
    DEFAULT_SYSTEMS,
    FAILED,
    LEFT,
    SENT,
    SUSPECT,
    SYSTEMS,
    USER,
    PeerCluster,
    PeerNode,
    Row,
    all_report,
    check_available,
    converged_at,
    describe,
    open_cluster,
)

POLL = 0.2  # seconds between reads of the nodes' rows while waiting


class Waiter:
    """Polls a cluster's rows until a condition on them holds."""

    def __init__(self, cluster: PeerCluster) -> None:
        self.c = cluster

    async def until(self, check: Callable[[], bool], timeout: float) -> bool:
        with trio.move_on_after(timeout):
            while True:
                await self.c.poll()
                if check():
                    return True
                await trio.sleep(POLL)
        return False


def pick_victims(nodes: Sequence[PeerNode], repeat: int, rng: random.Random) -> list[str]:
    """``repeat`` node names, all different while there are enough of them."""
    out: list[str] = []
    while len(out) < repeat:
        out += [n.name for n in rng.sample(list(nodes), min(len(nodes), repeat - len(out)))]
    return out


# ---------------------------------------------------------------------- phases


async def phase_join(c: PeerCluster, n: int, timeout: float) -> tuple[dict[str, Any], list[str]]:
    t0 = await c.start(n)
    ok = await Waiter(c).until(lambda: converged_at(c.rows, c.lives()) is not None, timeout)
    up = c.last_up()
    out: dict[str, Any] = {"last_up_s": None if up is None else up - t0, "after_up": {}}
    for source in c.sources:
        t = converged_at(c.rows, c.lives(), source)
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
            except AccountingError as e:
                problems.append(f"no byte counts: {e}")
                acct = None
        before = {name: cpu_ticks(pid) for name, pid in pids.items()}
        t0 = time.monotonic()
        await trio.sleep(seconds)
        after = {name: cpu_ticks(pid) for name, pid in pids.items()}
        elapsed = time.monotonic() - t0
        if acct is not None:
            traffic = acct.read()
    finally:
        if acct is not None:
            acct.close()
    cpu = {name: 100.0 * (after[name] - before[name]) / CLK_TCK / elapsed for name in pids}
    out: dict[str, Any] = {
        "seconds": elapsed,
        "cpu": {"per_node": cpu, "mean": statistics.fmean(cpu.values()), **summary(list(cpu.values()))},
        "problems": problems,
    }
    if traffic is not None:
        n = len(pids)
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
        if not await Waiter(c).until(lambda bid=bid, want=want: all_report(c.rows, want, USER, bid), timeout):
            problems.append(f"broadcast {bid}: not delivered everywhere within {timeout:g} s")
        messages.append({"id": bid, "origin": origin.name, "origin_pid": lives[origin.name], "lives": lives})
    await trio.sleep(1.0)  # late duplicates, if any, show up meanwhile
    await c.poll()
    pairs: list[float] = []
    slowest: list[float] = []
    for m in messages:
        rows = [r for r in c.rows if r.subject == m["id"] and r.kind in (USER, SENT) and r.source == "main"]
        ref = [r.t for r in rows if r.observer == m["origin"] and r.life == m["origin_pid"]]
        if not ref:
            problems.append(f"broadcast {m['id']}: no row from its origin {m['origin']}")
            continue
        t_ref = min(ref)
        got = Counter((r.observer, r.life) for r in rows if r.kind == USER)
        dup = {obs: k for (obs, _), k in got.items() if k > 1}
        if dup:
            problems.append(f"broadcast {m['id']}: delivered more than once on {dup}")
        latency = {
            r.observer: r.t - t_ref
            for r in rows
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
    runs: list[dict[str, Any]] = []
    problems: list[str] = []
    samples: dict[str, list[float]] = {s: [] for s in c.sources}
    rejoin: list[float] = []
    wait = Waiter(c)
    for name in victims:
        victim = c.node(name)
        assert victim.running(), f"{name} is not running"
        await c.poll()
        mark = len(c.rows)
        survivors = {k: v for k, v in c.lives().items() if k != name}
        t_kill = time.time()
        victim.kill(sig)

        def reported(mark: int = mark, survivors: dict[str, int] = survivors, name: str = name) -> bool:
            return all_report(c.rows[mark:], survivors, kind, name)

        if not await wait.until(reported, timeout):
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
            samples[source] += first.values()
        try:
            run["exit_status"] = await victim.wait_exit()
        except trio.TooSlowError:
            problems.append(f"{sig.name} {name}: still running 15 s later; SIGKILL")
            victim.kill(signal.SIGKILL)
            run["exit_status"] = await victim.wait_exit()
        t_restart = time.time()
        windows.append(Window(name, t_kill, t_restart))
        victim.start()
        if await wait.until(lambda: converged_at(c.rows, c.lives()) is not None, timeout):
            t = converged_at(c.rows, c.lives())
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
        if r.kind == kind
        and r.source == source
        and any(w.name == r.subject and w.t_kill <= r.t <= w.t_restart for w in windows)
    ]


def false_rows(rows: Sequence[Row], kind: str, windows: Sequence[Window], source: str) -> list[dict[str, Any]]:
    """``kind`` rows about a node that was running (outside every stop-to-restart window)."""
    out = []
    for r in rows:
        if r.kind != kind or r.source != source:
            continue
        if not any(w.name == r.subject and w.t_kill <= r.t <= w.t_restart for w in windows):
            out.append({"observer": r.observer, "about": r.subject, "t": r.t})
    return out


# ---------------------------------------------------------------------- one system, one size


async def run_system(system: str, n: int, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    rng = random.Random(f"{args.seed}-{n}")  # the same victims and origins for every system
    res: dict[str, Any] = {"system": system, "n": n, "started_at": time.time(), "problems": []}
    kills: list[Window] = []  # SIGKILL to restart
    stops: list[Window] = []  # graceful stop to restart
    timeout = args.timeout + n
    async with open_cluster(system, log_dir) as c:
        say(f"{system} N={n}: starting")
        res["join_s"], probs = await phase_join(c, n, timeout)
        res["problems"] += probs
        if probs:
            return res
        await trio.sleep(args.settle)
        say(f"{system} N={n}: idle window {args.idle:g} s")
        res["idle"] = await phase_idle(c, args.idle, args.account)
        res["problems"] += res["idle"].pop("problems")
        say(f"{system} N={n}: {args.messages} broadcasts")
        res["broadcast"] = await phase_broadcast(c, args.messages, rng, timeout)
        res["problems"] += res["broadcast"]["problems"]
        non_seeds = c.nodes[1:]
        say(f"{system} N={n}: {args.repeat} x kill -9")
        res["dead"] = await phase_stops(
            c,
            pick_victims(non_seeds, args.repeat, rng),
            signal.SIGKILL,
            FAILED,
            timeout=timeout,
            settle=args.settle,
            windows=kills,
        )
        res["problems"] += res["dead"]["problems"]
        say(f"{system} N={n}: {args.repeat} x graceful stop ({c.graceful_signal.name})")
        res["left"] = await phase_stops(
            c,
            pick_victims(non_seeds, args.repeat, rng),
            c.graceful_signal,
            LEFT,
            timeout=timeout,
            settle=args.settle,
            windows=stops,
        )
        res["problems"] += res["left"]["problems"]
        await trio.sleep(args.settle)
        await c.poll()
        # failed rows about a node that was running; and about a node stopped gracefully (its leave missed)
        res["false_failures"] = {s: false_rows(c.rows, FAILED, kills + stops, s) for s in c.sources}
        res["leave_as_failed"] = {s: in_windows(c.rows, FAILED, stops, s) for s in c.sources}
        res["false_suspicions"] = {s: len(false_rows(c.rows, SUSPECT, kills + stops, s)) for s in c.suspect_sources}
        res["sources"] = list(c.sources)
        res["rows"] = describe(c.rows)
        res["graceful_signal"] = c.graceful_signal.name
        if hasattr(c, "log") and getattr(c.log, "problems", None):
            res["problems"] += c.log.problems
    return res


# ---------------------------------------------------------------------- report


def _f(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def columns(results: Sequence[dict[str, Any]]) -> list[tuple[str, dict[str, Any], str]]:
    """(label, result, source) per column: one per system, plus serf[log] and the like."""
    out = []
    for res in results:
        for source in res.get("sources", ["main"]):
            label = res["system"] if source == "main" else f"{res['system']}[{source}]"
            out.append((label, res, source))
    return out


def rejoin_max(res: dict[str, Any]) -> float | None:
    values = [res.get(k, {}).get("rejoin", {}).get("max") for k in ("dead", "left")]
    return max((v for v in values if v is not None), default=None)


def table(n: int, results: Sequence[dict[str, Any]], args: argparse.Namespace) -> str:
    cols = columns(results)

    def stop(res: dict[str, Any], key: str, source: str, stat: str) -> str:
        s = res.get(key, {}).get("samples", {}).get(source)
        return _f(s[stat]) if s else "-"

    def main_only(source: str, value: str) -> str:
        return value if source == "main" else "="

    rows: list[tuple[str, list[str]]] = [
        ("join: all see all alive (s)", [_f(r.get("join_s", {}).get(s)) for _, r, s in cols]),
        (
            "  of which: last process start-up (s)",
            [main_only(s, _f(r.get("join_s", {}).get("last_up_s"))) for _, r, s in cols],
        ),
        (
            "  join after the last process up (s)",
            [_f(r.get("join_s", {}).get("after_up", {}).get(s)) for _, r, s in cols],
        ),
        ("kill -9 → failed, median (s)", [stop(r, "dead", s, "median") for _, r, s in cols]),
        ("kill -9 → failed, max (s)", [stop(r, "dead", s, "max") for _, r, s in cols]),
        ("graceful stop → left, median (s)", [stop(r, "left", s, "median") for _, r, s in cols]),
        ("graceful stop → left, max (s)", [stop(r, "left", s, "max") for _, r, s in cols]),
        ("restart → all alive again, max (s)", [main_only(s, _f(rejoin_max(r))) for _, r, s in cols]),
        (
            "broadcast → delivered, median (s)",
            [main_only(s, _f(r.get("broadcast", {}).get("pairs", {}).get("median"))) for _, r, s in cols],
        ),
        (
            "broadcast → delivered, max (s)",
            [main_only(s, _f(r.get("broadcast", {}).get("pairs", {}).get("max"))) for _, r, s in cols],
        ),
        (
            "idle CPU per node, mean (% core)",
            [main_only(s, _f(r.get("idle", {}).get("cpu", {}).get("mean"), 2)) for _, r, s in cols],
        ),
        (
            "idle CPU per node, max (% core)",
            [main_only(s, _f(r.get("idle", {}).get("cpu", {}).get("max"), 2)) for _, r, s in cols],
        ),
        (
            "idle bytes/s per node (UDP+TCP)",
            [main_only(s, _f(r.get("idle", {}).get("bytes_per_node_s"), 0)) for _, r, s in cols],
        ),
        (
            "idle UDP datagrams/s per node",
            [main_only(s, _f(r.get("idle", {}).get("udp_packets_per_node_s"), 1)) for _, r, s in cols],
        ),
        (
            "false failures, live nodes (rows)",
            [str(len(r["false_failures"][s])) if "false_failures" in r else "-" for _, r, s in cols],
        ),
        (
            "graceful stop reported failed (rows)",
            [str(len(r["leave_as_failed"][s])) if "leave_as_failed" in r else "-" for _, r, s in cols],
        ),
        (
            "suspicions of live nodes (rows)",
            [str(r["false_suspicions"][s]) if s in r.get("false_suspicions", {}) else "-" for _, r, s in cols],
        ),
        ("problems", [main_only(s, str(len(r["problems"]))) for _, r, s in cols]),
    ]
    width = max(11, *(len(label) + 2 for label, _, _ in cols))
    head = f"{'N = ' + str(n):<38}" + "".join(f"{label:>{width}}" for label, _, _ in cols)
    lines = [
        f"N = {n}: {args.repeat} kills and {args.repeat} graceful stops per system, {args.messages} broadcasts, "
        f"idle window {args.idle:g} s",
        head,
    ]
    for label, values in rows:
        lines.append(f"{label:<38}" + "".join(f"{v:>{width}}" for v in values))
    lines.append("  '=' same figure as the column to its left (same run); '-' not measured or not available")
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


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def versions(systems: Sequence[str]) -> dict[str, str]:
    out = {}
    if any(s.startswith("serf") for s in systems):
        from benchmarks.peers.serf_cluster import serf_version

        out["serf"] = serf_version() or "missing"
    if any(s.startswith("kinship") for s in systems):
        import kinship

        out["kinship"] = kinship.__version__
    from importlib.metadata import version

    out["chatter"] = version("chatter")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description="chatter, Serf and kinship side by side on 127.0.0.1: join, detection, leave, "
        "broadcast, idle CPU and bytes, false failures.",
    )
    p.add_argument("--n", type=int, action="append", help="cluster size; repeatable (default: 10)")
    p.add_argument("--repeat", type=int, default=5, help="kills and graceful stops per system and size (default: 5)")
    p.add_argument("--messages", type=int, default=10, help="broadcasts per system and size (default: 10)")
    p.add_argument(
        "--systems",
        default=",".join(DEFAULT_SYSTEMS),
        help=f"comma-separated, run in this order (default: {','.join(DEFAULT_SYSTEMS)}; known: {','.join(SYSTEMS)})",
    )
    p.add_argument("--idle", type=float, default=20.0, help="idle window in seconds (default: 20)")
    p.add_argument("--settle", type=float, default=2.0, help="pause after each convergence (s, default: 2)")
    p.add_argument("--timeout", type=float, default=30.0, help="longest wait for one step, plus N seconds")
    p.add_argument("--seed", type=int, default=1, help="seed for the victims and broadcast origins (default: 1)")
    p.add_argument("--no-bytes", dest="account", action="store_false", help="skip the iptables byte counts")
    p.add_argument("--log-dir", default=None, help="keep the nodes' logs and event files here")
    p.add_argument("--json", default=None, metavar="PATH", help="write the raw figures to PATH")
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
            Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return status


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {unknown}; known: {', '.join(SYSTEMS)}")
    if any(n < 3 for n in args.n or []):
        parser.error("--n must be at least 3")
    if args.repeat < 1 or args.messages < 1 or args.idle <= 0:
        parser.error("--repeat and --messages must be >= 1, --idle > 0")
    for s in systems:
        why = check_available(s)
        if why:
            print(f"compare: {s}: {why}", file=sys.stderr)
            return 2
    if args.account:
        why = iptables_problem()
        if why:
            print(f"compare: no byte counts ({why}); run as root with iptables, or pass --no-bytes", file=sys.stderr)
            return 2
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    with tempfile.TemporaryDirectory(prefix="chatter-compare-") as tmp:
        log_root = Path(args.log_dir) if args.log_dir else Path(tmp)
        try:
            return trio.run(amain, args, systems, log_root)
        except KeyboardInterrupt:  # the launchers have stopped their nodes on the way out
            print("interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
