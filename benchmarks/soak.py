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
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

import trio

from benchmarks.compare import Waiter, say, versions
from benchmarks.netacct import iptables_problem
from benchmarks.peers import (
    DEFAULT_SYSTEMS,
    FAILED,
    REPO,
    SUSPECT,
    SYSTEMS,
    check_available,
    converged_at,
    open_cluster,
)

COUNTERS = ("suspicions", "refutations", "deaths")


# ---------------------------------------------------------------------- inside the namespace


class Loss:
    """Drop each incoming UDP datagram with probability p (in the current network namespace)."""

    def __init__(self, p: float) -> None:
        self.count = ["INPUT", "-p", "udp"]
        self.drop = ["INPUT", "-p", "udp", "-m", "statistic", "--mode", "random", "--probability", f"{p}", "-j", "DROP"]
        self.added: list[list[str]] = []

    def __enter__(self) -> Self:
        try:
            for rule in (self.count, self.drop):
                subprocess.run(["iptables", "-w", "5", "-A", *rule], check=True, capture_output=True, text=True)
                self.added.append(rule)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def read(self) -> dict[str, int]:
        """Datagrams that reached INPUT, and those dropped."""
        out = {"udp_in": 0, "dropped": 0}
        text = subprocess.run(["iptables", "-w", "5", "-S", "INPUT", "-v"], capture_output=True, text=True).stdout
        for line in text.splitlines():
            f = line.split()
            if "-p" not in f or "-c" not in f or f[f.index("-p") + 1] != "udp":
                continue
            n = int(f[f.index("-c") + 1])
            out["dropped" if "DROP" in f else "udp_in"] += n
        return out

    def close(self) -> None:
        while self.added:
            rule = self.added.pop()
            subprocess.run(["iptables", "-w", "5", "-D", *rule], capture_output=True)


def sum_counters(per_node: dict[str, dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for counters in per_node.values():
        total.update({k: v for k, v in counters.items() if k in COUNTERS})
    return dict(total)


async def soak_system(system: str, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    res: dict[str, Any] = {"system": system, "n": args.n, "loss": args.loss, "problems": []}
    timeout = args.timeout + args.n
    async with open_cluster(system, log_dir) as c:
        wait = Waiter(c)
        say(f"{system}: starting {args.n} nodes")
        t0 = await c.start(args.n)
        if not await wait.until(lambda: converged_at(c.rows, c.lives()) is not None, timeout):
            res["problems"].append(f"not converged within {timeout:g} s, before any loss")
            return res
        t = converged_at(c.rows, c.lives())
        res["join_s"] = None if t is None else t - t0
        await trio.sleep(args.settle)
        lives = c.lives()
        await c.poll()
        before = {n.name: await c.counters(n) for n in c.running()}
        mark = len(c.rows)
        say(f"{system}: converged; {args.loss:.1%} UDP loss for {args.minutes:g} min")
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
            t_stop = time.time()
        after = {n.name: await c.counters(n) for n in c.running()}
        res["duration_s"] = t_stop - t_start
        recovered = await wait.until(lambda: converged_at(c.rows, c.lives()) is not None, args.recover)
        res["converged_after"] = recovered
        if not recovered:
            res["problems"].append(f"not all alive everywhere {args.recover:g} s after the loss stopped")
        if c.lives() != lives:
            res["problems"].append(f"processes changed during the soak: {lives} -> {c.lives()}")
        soak_rows = [r for r in c.rows[mark:] if r.t <= t_stop]
        ipt = res["iptables"]
        res["measured_loss"] = ipt["dropped"] / ipt["udp_in"] if ipt["udp_in"] else None
        res["sources"] = list(c.sources)
        res["failed"] = {}
        for source in c.sources:
            failed = [r for r in soak_rows if r.kind == FAILED and r.source == source]
            res["failed"][source] = {
                "rows": len(failed),
                "members": sorted({r.subject for r in failed}),
                "detail": [{"observer": r.observer, "about": r.subject, "t": r.t - t_start} for r in failed],
                "suspect_rows": sum(r.kind == SUSPECT and r.source == source for r in soak_rows)
                if source in c.suspect_sources
                else None,
            }
        res["counters"] = {  # only the counters the system has
            name: {
                k: after.get(name, {}).get(k, 0) - before.get(name, {}).get(k, 0)
                for k in COUNTERS
                if k in after.get(name, {}) or k in before.get(name, {})
            }
            for name in before
        }
        res["counters_total"] = sum_counters(res["counters"])
        if hasattr(c, "log") and getattr(c.log, "problems", None):
            res["problems"] += c.log.problems
    return res


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    cols = []
    for res in results:
        for source in res.get("sources", ["main"]):
            cols.append((res["system"] if source == "main" else f"{res['system']}[{source}]", res, source))
    width = max(11, *(len(label) + 2 for label, _, _ in cols))

    def f(res: dict[str, Any], source: str, key: str) -> str:
        v = res.get("failed", {}).get(source, {}).get(key)
        if v is None:
            return "-"
        return str(len(v)) if isinstance(v, list) else str(v)

    def counter(res: dict[str, Any], source: str, key: str) -> str:
        if source != "main":
            return "="
        v = res.get("counters_total", {}).get(key)
        return "-" if v is None else str(v)

    def main_only(source: str, value: str) -> str:
        return value if source == "main" else "="

    rows = [
        ("soak (s)", [main_only(s, f"{r['duration_s']:.0f}" if "duration_s" in r else "-") for _, r, s in cols]),
        (
            "UDP loss applied (measured)",
            [
                main_only(s, f"{r['measured_loss']:.2%}" if r.get("measured_loss") is not None else "-")
                for _, r, s in cols
            ],
        ),
        ("false deaths (failed rows)", [f(r, s, "rows") for _, r, s in cols]),
        ("members ever declared dead", [f(r, s, "members") for _, r, s in cols]),
        ("suspect rows", [f(r, s, "suspect_rows") for _, r, s in cols]),
        ("suspicions raised (counter)", [counter(r, s, "suspicions") for _, r, s in cols]),
        ("refutations (counter)", [counter(r, s, "refutations") for _, r, s in cols]),
        ("deaths declared (counter)", [counter(r, s, "deaths") for _, r, s in cols]),
        (
            "all alive everywhere after",
            [main_only(s, {True: "yes", False: "NO"}.get(r.get("converged_after"), "-")) for _, r, s in cols],
        ),
    ]
    lines = [
        f"soak: N = {args.n}, {args.loss:.1%} UDP loss (iptables statistic DROP on INPUT), {args.minutes:g} min each",
        f"{'':<32}" + "".join(f"{label:>{width}}" for label, _, _ in cols),
    ]
    for label, values in rows:
        lines.append(f"{label:<32}" + "".join(f"{v:>{width}}" for v in values))
    lines.append("  '=' same as the column to its left; '-' not available for that system")
    for res in results:
        for p in res["problems"]:
            lines.append(f"  {res['system']}: PROBLEM: {p}")
    return "\n".join(lines)


def current_netns() -> str:
    proc = subprocess.run(["ip", "netns", "identify", str(os.getpid())], capture_output=True, text=True)
    return proc.stdout.strip()


async def inner_main(args: argparse.Namespace, systems: list[str], log_root: Path) -> int:
    out: dict[str, Any] = {"args": vars(args), "versions": versions(systems), "results": []}
    for system in systems:
        log_dir = log_root / system
        log_dir.mkdir(parents=True, exist_ok=True)
        res = await soak_system(system, args, log_dir)
        out["results"].append(res)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    print(table(out["results"], args), flush=True)
    return 0


def inner(args: argparse.Namespace, systems: list[str]) -> int:
    here = current_netns()
    if not args.netns or here != args.netns:
        print(f"soak: --inner must run inside network namespace {args.netns!r} (this is {here!r})", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="chatter-soak-") as tmp:
        log_root = Path(args.log_dir) if args.log_dir else Path(tmp)
        try:
            return trio.run(inner_main, args, systems, log_root)
        except KeyboardInterrupt:  # the launchers stopped their nodes on the way out
            print("soak: interrupted", file=sys.stderr)
            return 130


# ---------------------------------------------------------------------- outside: the namespace


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True)


def outer(args: argparse.Namespace, argv: list[str]) -> int:
    if os.geteuid() != 0:
        print("soak: needs root (ip netns, iptables)", file=sys.stderr)
        return 2
    why = iptables_problem()
    if why:
        print(f"soak: {why}", file=sys.stderr)
        return 2
    ns = f"chatter-soak-{os.getpid()}"
    created = False
    child: subprocess.Popen[bytes] | None = None

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        p = _run("ip", "netns", "add", ns)
        if p.returncode != 0:
            print(f"soak: cannot create network namespace {ns}: {p.stderr.strip()}", file=sys.stderr)
            return 2
        created = True
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        probe = ["INPUT", "-p", "udp", "-m", "statistic", "--mode", "random", "--probability", "0.5", "-j", "DROP"]
        p = _run("ip", "netns", "exec", ns, "iptables", "-w", "5", "-A", *probe)
        if p.returncode != 0:
            print(
                f"soak: the kernel refused an iptables statistic DROP rule in {ns}: {p.stderr.strip()}\n"
                "soak: needs iptables (apt-get install -y iptables) and the xt_statistic match in the kernel",
                file=sys.stderr,
            )
            return 2
        _run("ip", "netns", "exec", ns, "iptables", "-w", "5", "-D", *probe)
        print(f"soak: network namespace {ns}", file=sys.stderr, flush=True)
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "benchmarks.soak", "--inner", "--netns", ns, *argv]
        child = subprocess.Popen(cmd, cwd=REPO)
        return child.wait()
    except KeyboardInterrupt:
        print("soak: interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if child is not None and child.poll() is None:
            os.kill(child.pid, signal.SIGINT)  # its launchers stop their nodes by PID
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                os.kill(child.pid, signal.SIGKILL)
                child.wait()
        if created:
            left = [int(x) for x in _run("ip", "netns", "pids", ns).stdout.split()]
            for pid in left:
                print(f"soak: process {pid} still in {ns}; SIGKILL", file=sys.stderr)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while left and time.monotonic() < deadline and _run("ip", "netns", "pids", ns).stdout.split():
                time.sleep(0.1)
            p = _run("ip", "netns", "del", ns)
            if p.returncode != 0:
                print(f"soak: could not delete {ns}: {p.stderr.strip()}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description="Soak clusters under random UDP loss in a network namespace of their own; "
        "count false deaths, suspicions and refutations.",
    )
    p.add_argument("--loss", type=float, default=0.05, help="probability of dropping a datagram (default: 0.05)")
    p.add_argument("--minutes", type=float, default=10.0, help="soak length per system (default: 10)")
    p.add_argument("--n", type=int, default=10, help="nodes per cluster (default: 10)")
    p.add_argument(
        "--systems",
        default=",".join(DEFAULT_SYSTEMS),
        help=f"comma-separated, run in this order (default: {','.join(DEFAULT_SYSTEMS)}; known: {','.join(SYSTEMS)})",
    )
    p.add_argument("--settle", type=float, default=2.0, help="pause between convergence and loss (s, default: 2)")
    p.add_argument("--recover", type=float, default=60.0, help="wait for convergence after the loss (s, default: 60)")
    p.add_argument("--timeout", type=float, default=30.0, help="longest wait for the join, plus N seconds")
    p.add_argument("--log-dir", default=None, help="keep the nodes' logs and event files here")
    p.add_argument("--json", default=None, metavar="PATH", help="write the raw figures to PATH")
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--netns", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {unknown}; known: {', '.join(SYSTEMS)}")
    if not 0 <= args.loss < 1 or args.minutes <= 0 or args.n < 2:
        parser.error("--loss must be in [0, 1), --minutes > 0, --n >= 2")
    # Ctrl-C must reach us even when started with SIGINT ignored (e.g. in the background of a script)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.inner:
        return inner(args, systems)
    for s in systems:
        why = check_available(s)
        if why:
            print(f"soak: {s}: {why}", file=sys.stderr)
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
