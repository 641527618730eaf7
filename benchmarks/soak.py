"""Soak under UDP loss in a network namespace of its own: false deaths, suspicions, refutations.

    python -m benchmarks.soak --loss 0.05 --minutes 10 --n 10 [--systems chatter,serf,serf-local,kinship]
                              [--json out.json] [--log-dir DIR]

Needs root and iptables (the kernel's ``statistic`` match; netem is not used). The command:

1. creates the namespace ``chatter-soak-<pid>`` (``ip netns add``, ``ip -n NS link set lo up``)
   and checks that iptables works inside it;
2. runs itself again inside it (``ip netns exec NS python -m benchmarks.soak --inner ...``): that
   child starts every node, on 127.0.0.1 of the namespace, and reads their rows;
3. whatever happens (Ctrl-C, SIGTERM, an error), stops the child (SIGINT, then SIGKILL after
   60 s), kills by PID any process still in the namespace, and deletes the namespace.

Inside, for each system in turn: N nodes are started and converge without loss; then
``iptables -A INPUT -p udp -m statistic --mode random --probability P -j DROP`` (after a
counting rule, so the loss actually applied is measured) drops each datagram with
probability P (on lo every datagram passes INPUT once; TCP is not touched) for ``--minutes``;
the rules are removed and the cluster is given ``--recover`` seconds to converge again.
Nothing is killed, so every ``failed`` row recorded during the soak is a false death. Also
counted: ``suspect`` rows, and per-node protocol counters over the soak (chatter: /v1/health
``suspicions``, ``refutations``, ``deaths``; kinship: ``Cluster.stats()``; Serf: suspicions and
deaths counted from its agent log).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import trio

from benchmarks._lib.cli import REPO, add_output_args, log_root, new_parser, run_trio, write_json
from benchmarks._lib.cli import say_timed as say
from benchmarks._lib.iptables import Loss, iptables_problem, statistic_drop
from benchmarks._lib.netns import NamespaceError, current_netns, network_namespace
from benchmarks._lib.tables import Figure, Result, dig, main_only, render
from benchmarks.peers import (
    FAILED,
    SUSPECT,
    PeerCluster,
    Row,
    add_systems_arg,
    open_cluster,
    parse_systems,
    unavailable,
    versions,
)

COUNTERS = ("suspicions", "refutations", "deaths")


# ---------------------------------------------------------------------- inside the namespace


def sum_counters(per_node: dict[str, dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for counters in per_node.values():
        total.update({k: v for k, v in counters.items() if k in COUNTERS})
    return dict(total)


def counter_deltas(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Per node, end minus start of the loss, for the counters the system has."""
    return {
        name: {
            k: after.get(name, {}).get(k, 0) - before.get(name, {}).get(k, 0)
            for k in COUNTERS
            if k in after.get(name, {}) or k in before.get(name, {})
        }
        for name in before
    }


async def under_loss(c: PeerCluster, system: str, args: argparse.Namespace, res: dict[str, Any]) -> tuple[float, float]:
    """``--minutes`` of loss, with a progress line every 30 s; (start, stop) Unix times.
    Puts the iptables counters in ``res``."""
    mark = len(c.rows)
    with Loss(args.loss) as loss:
        t_start = time.time()
        t_end = t_start + args.minutes * 60
        next_report = t_start + 30
        while time.time() < t_end:
            await trio.sleep(min(2.0, max(0.0, t_end - time.time())))
            await c.poll()
            if time.time() >= next_report:
                next_report += 30
                soak = c.rows[mark:]
                src = c.suspect_sources[0]
                say(
                    f"{system}: {time.time() - t_start:.0f} s: "
                    f"{sum(r.kind == FAILED and r.source == 'main' for r in soak)} failed rows, "
                    f"{sum(r.kind == SUSPECT and r.source == src for r in soak)} suspect rows ({src})"
                )
        await c.poll()
        res["iptables"] = loss.read()
        return t_start, time.time()


def failed_figures(c: PeerCluster, soak_rows: list[Row], t_start: float) -> dict[str, Any]:
    """Per row source: the failed rows recorded during the loss (all false deaths), and the suspect rows."""
    out = {}
    for source in c.sources:
        failed = [r for r in soak_rows if r.kind == FAILED and r.source == source]
        out[source] = {
            "rows": len(failed),
            "members": sorted({r.subject for r in failed}),
            "detail": [{"observer": r.observer, "about": r.subject, "t": r.t - t_start} for r in failed],
            "suspect_rows": sum(r.kind == SUSPECT and r.source == source for r in soak_rows)
            if source in c.suspect_sources
            else None,
        }
    return out


async def soak_system(system: str, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    res: dict[str, Any] = {"system": system, "n": args.n, "loss": args.loss, "problems": []}
    timeout = args.timeout + args.n
    async with open_cluster(system, log_dir) as c:
        say(f"{system}: starting {args.n} nodes")
        t0 = await c.start(args.n)
        if not await c.until_converged(timeout):
            res["problems"].append(f"not converged within {timeout:g} s, before any loss")
            return res
        t = c.converged_at()
        res["join_s"] = None if t is None else t - t0
        await trio.sleep(args.settle)
        lives = c.lives()
        await c.poll()
        before = {n.name: await c.counters(n) for n in c.running()}
        mark = len(c.rows)
        say(f"{system}: converged; {args.loss:.1%} UDP loss for {args.minutes:g} min")
        t_start, t_stop = await under_loss(c, system, args, res)
        after = {n.name: await c.counters(n) for n in c.running()}
        res["duration_s"] = t_stop - t_start
        recovered = await c.until_converged(args.recover)
        res["converged_after"] = recovered
        if not recovered:
            res["problems"].append(f"not all alive everywhere {args.recover:g} s after the loss stopped")
        if c.lives() != lives:
            res["problems"].append(f"processes changed during the soak: {lives} -> {c.lives()}")
        ipt = res["iptables"]
        res["measured_loss"] = ipt["dropped"] / ipt["udp_in"] if ipt["udp_in"] else None
        res["sources"] = list(c.sources)
        res["failed"] = failed_figures(c, [r for r in c.rows[mark:] if r.t <= t_stop], t_start)
        res["counters"] = counter_deltas(before, after)  # only the counters the system has
        res["counters_total"] = sum_counters(res["counters"])
        if hasattr(c, "log") and getattr(c.log, "problems", None):
            res["problems"] += c.log.problems
    return res


def _failed(key: str) -> Callable[[Result, str], str]:
    def cell(r: Result, source: str) -> str:
        v = dig(r, "failed", source, key)
        if v is None:
            return "-"
        return str(len(v)) if isinstance(v, list) else str(v)

    return cell


def _counter(key: str) -> Callable[[Result, str], str]:
    def cell(r: Result, source: str) -> str:
        if source != "main":
            return "="
        v = dig(r, "counters_total", key)
        return "-" if v is None else str(v)

    return cell


def _loss(r: Result) -> str:
    return f"{r['measured_loss']:.2%}" if r.get("measured_loss") is not None else "-"


def _after(r: Result) -> str:
    v = r.get("converged_after")
    return "-" if v is None else "yes" if v else "NO"


FIGURES: list[Figure] = [
    ("soak (s)", lambda r, s: main_only(s, f"{r['duration_s']:.0f}" if "duration_s" in r else "-")),
    ("UDP loss applied (measured)", lambda r, s: main_only(s, _loss(r))),
    ("false deaths (failed rows)", _failed("rows")),
    ("members ever declared dead", _failed("members")),
    ("suspect rows", _failed("suspect_rows")),
    ("suspicions raised (counter)", _counter("suspicions")),
    ("refutations (counter)", _counter("refutations")),
    ("deaths declared (counter)", _counter("deaths")),
    ("all alive everywhere after", lambda r, s: main_only(s, _after(r))),
]


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"soak: N = {args.n}, {args.loss:.1%} UDP loss (iptables statistic DROP on INPUT), {args.minutes:g} min each",
        *render("", 32, results, FIGURES),
        "  '=' same as the column to its left; '-' not available for that system",
    ]
    for res in results:
        for p in res["problems"]:
            lines.append(f"  {res['system']}: PROBLEM: {p}")
    return "\n".join(lines)


async def inner_main(args: argparse.Namespace, systems: list[str], log_root: Path) -> int:
    out: dict[str, Any] = {"args": vars(args), "versions": versions(systems), "results": []}
    for system in systems:
        log_dir = log_root / system
        log_dir.mkdir(parents=True, exist_ok=True)
        res = await soak_system(system, args, log_dir)
        out["results"].append(res)
        if args.json:
            write_json(args.json, out)
    print(table(out["results"], args), flush=True)
    return 0


def inner(args: argparse.Namespace, systems: list[str]) -> int:
    here = current_netns()
    if not args.netns or here != args.netns:
        print(f"soak: --inner must run inside network namespace {args.netns!r} (this is {here!r})", file=sys.stderr)
        return 2
    with log_root(args.log_dir, "chatter-soak-") as root:
        # on Ctrl-C, the launchers stopped their nodes on the way out
        status = run_trio(inner_main, args, systems, root, interrupted="soak: interrupted")
    return 130 if status is None else status


# ---------------------------------------------------------------------- outside: the namespace


def outer(args: argparse.Namespace, argv: list[str]) -> int:
    if os.geteuid() != 0:
        print("soak: needs root (ip netns, iptables)", file=sys.stderr)
        return 2
    why = iptables_problem()
    if why:
        print(f"soak: {why}", file=sys.stderr)
        return 2

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        with network_namespace(f"chatter-soak-{os.getpid()}", prog="soak") as ns:
            probe = statistic_drop("INPUT", 0.5)
            p = ns.run("iptables", "-w", "5", "-A", *probe)
            if p.returncode != 0:
                print(
                    f"soak: the kernel refused an iptables statistic DROP rule in {ns.name}: {p.stderr.strip()}\n"
                    "soak: needs iptables (apt-get install -y iptables) and the xt_statistic match in the kernel",
                    file=sys.stderr,
                )
                return 2
            ns.run("iptables", "-w", "5", "-D", *probe)
            print(f"soak: network namespace {ns.name}", file=sys.stderr, flush=True)
            cmd = [sys.executable, "-m", "benchmarks.soak", "--inner", "--netns", ns.name, *argv]
            return ns.start(cmd, cwd=REPO).wait()
    except NamespaceError as e:
        print(f"soak: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the namespace's clean-up has run
        return 130


def build_parser() -> argparse.ArgumentParser:
    p = new_parser(
        "soak",
        "Soak clusters under random UDP loss in a network namespace of their own; "
        "count false deaths, suspicions and refutations.",
    )
    p.add_argument("--loss", type=float, default=0.05, help="probability of dropping a datagram (default: 0.05)")
    p.add_argument("--minutes", type=float, default=10.0, help="soak length per system (default: 10)")
    p.add_argument("--n", type=int, default=10, help="nodes per cluster (default: 10)")
    add_systems_arg(p)
    p.add_argument("--settle", type=float, default=2.0, help="pause between convergence and loss (s, default: 2)")
    p.add_argument("--recover", type=float, default=60.0, help="wait for convergence after the loss (s, default: 60)")
    p.add_argument("--timeout", type=float, default=30.0, help="longest wait for the join, plus N seconds")
    add_output_args(p, "keep the nodes' logs and event files here")
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--netns", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    systems = parse_systems(parser, args.systems)
    if not 0 <= args.loss < 1 or args.minutes <= 0 or args.n < 2:
        parser.error("--loss must be in [0, 1), --minutes > 0, --n >= 2")
    # Ctrl-C must reach us even when started with SIGINT ignored (e.g. in the background of a script)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.inner:
        return inner(args, systems)
    missing = unavailable(systems)
    if missing:
        print(f"soak: {missing[0]}: {missing[1]}", file=sys.stderr)
        return 2
    if args.json:  # the child writes it, from the repository's directory
        argv = [*_without(argv, "--json"), "--json", str(Path(args.json).resolve())]
    if args.log_dir:
        argv = [*_without(argv, "--log-dir"), "--log-dir", str(Path(args.log_dir).resolve())]
    return outer(args, argv)


def _without(argv: list[str], flag: str) -> list[str]:
    """argv without ``flag VALUE`` and ``flag=VALUE``."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == flag:
            skip = True
            continue
        if a.startswith(flag + "="):
            continue
        out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main())
