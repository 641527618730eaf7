"""Throughput (c): a profile of the core's hot path, and the runtime's cost per delivery.

cProfile of the three "new rumors" workloads of ``throughput_core`` (half as many datagrams):
the top functions by own time, and the chatterd functions by cumulative time. Also the
runtime's cost per delivery on top of the core: microseconds per call of ``Runtime._record``
(the event row and the log line), with chatterd's logging set up as in a node
(``CHATTER_LOG=info``, JSON lines) writing to /dev/null.

    python -m benchmarks.throughput --parts profile [--profile lan] [--peers 9] [--core-count 40000] [--json out.json]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
import timeit
from typing import Any

from benchmarks._lib.feeds import core_node, core_workloads, debug_payload, drive, fake_peers, user_payload
from chatterd.core.config import PROFILES
from chatterd.testing import HOST


def profile_core(args: argparse.Namespace, top: int = 14) -> dict[str, Any]:
    config = PROFILES[args.profile]
    peers = fake_peers(args.peers)
    out: dict[str, Any] = {}
    for name, make, per, batch, prefeed in core_workloads(args.core_count // 2, peers):
        if not name.startswith("new") or prefeed:
            continue
        feed = make()
        node = core_node(config, peers)
        prof = cProfile.Profile()
        prof.enable()
        drive(node, feed, batch)
        prof.disable()
        st = pstats.Stats(prof)
        total = st.total_tt  # type: ignore[attr-defined]
        rows = function_rows(st, total, len(feed))
        cum = sorted(rows, key=lambda r: -r["cumtime"])
        out[name] = {
            "datagrams": len(feed),
            "per": per,
            "total_s": total,
            "by_own_time": rows[:top],
            "by_cumulative": [r for r in cum if "chatterd" in r["function"]][:top],
        }
    return out


def function_rows(st: pstats.Stats, total: float, datagrams: int) -> list[dict[str, Any]]:
    """One row per profiled function, by own time, most first."""
    rows = []
    for (path, line, func), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{_short(path)}:{line}({func})",
                "calls": nc,
                "tottime": tt,
                "cumtime": ct,
                "own_share": tt / total if total else 0.0,
                "per_dgram_us": 1e6 * tt / datagrams,
            }
        )
    rows.sort(key=lambda r: -r["tottime"])
    return rows


def _short(path: str) -> str:
    for marker in ("/chatterd/", "/benchmarks/"):
        i = path.find(marker)
        if i >= 0:
            return path[i + 1 :]
    if path.startswith("~") or path.startswith("<"):
        return path
    return os.path.basename(path)


def bench_record() -> dict[str, float]:
    """Microseconds per delivery in the runtime's Runtime._record (event row + log line), with
    chatterd's logging set up as in a node (CHATTER_LOG=info, JSON lines) writing to /dev/null."""
    import logging

    import structlog

    from chatterd import logs
    from chatterd.core.events import Delivery
    from chatterd.runtime import Options, Runtime

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    out: dict[str, float] = {}
    with open(os.devnull, "w") as devnull:
        try:
            logs.setup(spec="info", fmt="json", stream=devnull)
            rt = Runtime(Options(listen=(HOST, 1), name="bench", config=PROFILES["lan"]))
            ts = int(time.time() * 1000)
            cases = {
                "DebugMessage delivery (logged at info)": Delivery("0" * 32, "debug", "peer1", ts, 3, debug_payload(1)),
                "user-payload delivery (logged at debug: filtered)": Delivery(
                    "0" * 32, "user", "peer1", ts, 3, user_payload(1)
                ),
            }
            for name, ev in cases.items():
                n = 5000
                best = min(timeit.repeat(lambda ev=ev: rt._record(ev), number=n, repeat=3))  # type: ignore[misc]
                out[name] = 1e6 * best / n
        finally:
            root.handlers[:], _ = saved
            root.setLevel(saved[1])
            structlog.reset_defaults()
    return out


def bench_profile(args: argparse.Namespace) -> dict[str, Any]:
    return profile_core(args) | {"runtime_record": bench_record()}


def report_profile(prof: dict[str, Any]) -> list[str]:
    lines = ["(c) profile of the core's hot path (cProfile; own time = time in the function itself)"]
    record = prof.pop("runtime_record", None)
    for name, p in prof.items():
        lines.append(
            f"  {name}: {p['datagrams']} datagrams, {p['total_s']:.2f} s profiled "
            f"({1e6 * p['total_s'] / p['datagrams']:.1f} us per datagram under the profiler)"
        )
        lines.append(f"    {'own %':>6}{'own s':>8}{'cum s':>8}{'calls':>10}  function")
        for r in p["by_own_time"]:
            lines.append(
                f"    {100 * r['own_share']:>5.1f}%{r['tottime']:>8.3f}{r['cumtime']:>8.3f}{r['calls']:>10}"
                f"  {r['function']}"
            )
    if record:
        prof["runtime_record"] = record
        lines.append("  the runtime's cost per delivery on top of the core (Runtime._record: event row + log line):")
        lines += [f"    {us:>7.1f} us  {name}" for name, us in record.items()]
    return lines
