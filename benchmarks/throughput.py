"""Throughput: how many datagrams one node ingests, how many user messages a cluster carries.

    python -m benchmarks.throughput [--parts core,profile,json,process,cluster] [--json out.json]
                                    [--rates 10000,20000,...] [--cluster-rates 250,500,1000,2000]
                                    [--log-dir DIR]

The parts run in this order, each from its own module; the first three in this process, with
no chatterd process:

core     (a)(i) the protocol core alone: one ``Node`` fed pre-encoded datagrams the way the
         runtime feeds it (benchmarks/throughput_core.py).
profile  (c) cProfile of the core's "new rumors" workloads, and the runtime's cost per
         delivery (benchmarks/throughput_profile.py).
json     (c) JSON libraries for our wire use: decode + validate + encode the forwarded copy of
         a typical datagram (benchmarks/throughput_json.py).
process  (a)(ii) one real chatterd process blasted with UDP by sender processes at increasing
         rates; the highest rate it sustains with < 1 % lost (benchmarks/throughput_process.py).
cluster  (b) ``--cluster-n`` real nodes carrying injected DebugMessages at increasing rates;
         every accepted message must reach every node exactly once
         (benchmarks/throughput_cluster.py).

This module is the command: its options, the parts in turn, one JSON file with every part's
figures (``--json``, rewritten after each part) and the exit status: 0, or 1 if a target was
missed (>= 20,000 datagrams/s ingested with < 1 % lost, >= 1,000 msgs/s with none lost) or a
correctness check failed. The chatterd source measured is printed first (HEAD and whether
chatterd/ had uncommitted changes). ``--blast-worker SPEC`` (internal) makes it one sender
process of the ``process`` part.

    python -m benchmarks.throughput --parts core,json,process,cluster --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from benchmarks import throughput_cluster, throughput_core, throughput_json, throughput_process, throughput_profile
from benchmarks._lib.blast import blast_worker
from benchmarks._lib.cli import (
    add_output_args,
    add_profile_arg,
    ints,
    log_root,
    names,
    new_parser,
    run_trio,
    source_state,
    write_json,
)
from chatterd.core.config import PROFILES

PARTS = ("core", "profile", "json", "process", "cluster")
SERIES = throughput_process.SERIES


def build_parser() -> argparse.ArgumentParser:
    p = new_parser("throughput", "Ingest rate of one chatterd node and message throughput of a cluster.")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    add_profile_arg(p, sorted(PROFILES))
    p.add_argument("--peers", type=int, default=9, help="fake members the measured node knows (default: 9)")
    p.add_argument("--core-count", type=int, default=40_000, help="datagrams per core workload (default: 40000)")
    add_process_args(p)
    add_cluster_args(p)
    add_output_args(p, "keep the nodes' logs (and py-spy output) here")
    p.add_argument("--blast-worker", default=None, help=argparse.SUPPRESS)
    return p


def add_process_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rates",
        type=ints,
        default=[5_000, 10_000, 15_000, 20_000, 25_000, 30_000, 40_000, 50_000, 60_000, 80_000],
        help="blast rates for the real process, datagrams/s (default: 5000,...,80000)",
    )
    p.add_argument(
        "--series",
        default=",".join(SERIES),
        help="blast series: new-debug (new rumors, DebugMessage), new-user (new rumors, user payload), "
        "dup (duplicates), hb (heartbeats) (default: all)",
    )
    p.add_argument("--step", type=float, default=3.0, help="seconds per blast rate (default: 3)")
    p.add_argument("--pause", type=float, default=1.0, help="pause between blast rates (s, default: 1)")
    p.add_argument("--senders", type=int, default=1, help="sender processes for the blast (default: 1)")
    p.add_argument("--worker-startup", type=float, default=2.0, help=argparse.SUPPRESS)
    p.add_argument("--no-py-spy", dest="py_spy", action="store_false", help="skip py-spy sampling of the nodes")
    p.add_argument("--spy-seconds", type=float, default=6.0, help="py-spy blast length (s, default: 6)")


def add_cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster-n", type=int, default=10, help="nodes in the cluster for (b) (default: 10)")
    p.add_argument(
        "--cluster-rates",
        type=ints,
        default=[250, 500, 1000, 1500, 2000, 3000],
        help="inject rates for (b), msgs/s (default: 250,500,1000,1500,2000,3000)",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds of injection per rate (default: 10)")
    p.add_argument("--poll", type=float, default=0.3, help="seconds between event polls of each node (default: 0.3)")
    p.add_argument("--settle-timeout", type=float, default=30.0, help=argparse.SUPPRESS)
    p.add_argument(
        "--baseline-messages",
        type=int,
        default=4000,
        help="messages for the no-load loss baseline in the simulator; 0 to skip (default: 4000)",
    )


async def run_part(part: str, args: argparse.Namespace, log_dir: Path, res: dict[str, Any]) -> tuple[list[str], bool]:
    """Run one part, put its figures in ``res``; its report and whether it met its target."""
    if part == "core":
        runs = throughput_core.bench_core(args)
        res["core"] = throughput_core.as_json(runs)
        return throughput_core.report_core(runs), True
    if part == "profile":
        res["profile"] = throughput_profile.bench_profile(args)
        return throughput_profile.report_profile(res["profile"]), True
    if part == "json":
        res["json_libs"] = throughput_json.bench_json(args)
        return throughput_json.report_json(res["json_libs"]), True
    if part == "process":
        res["process"] = await throughput_process.bench_process(args, log_dir)
        sustained = res["process"]["sustained"].get("new-debug")
        ok = sustained is None or sustained >= throughput_process.TARGET_INGEST
        return throughput_process.report_process(res["process"]), ok
    res["cluster"] = await throughput_cluster.bench_cluster(args, log_dir)
    ok = res["cluster"]["best"] >= throughput_cluster.TARGET_CLUSTER
    return throughput_cluster.report_cluster(res["cluster"]), ok


def recheck_source(res: dict[str, Any], part: str) -> None:
    """chatterd may be edited while this runs: the processes run what is on disk when they start."""
    now = source_state()
    res.setdefault("source_per_part", {})[part] = now
    if now != res["source"]:
        print(f"note: chatterd source changed since the start; for {part}: {now}\n", flush=True)


async def amain(args: argparse.Namespace, parts: list[str], log_dir: Path) -> tuple[dict[str, Any], bool]:
    res: dict[str, Any] = {"source": source_state(), "args": dict(vars(args))}
    ok = True
    print(f"chatterd source: {res['source']}; profile {args.profile}; {os.cpu_count()} CPUs\n", flush=True)
    for part in PARTS:
        if part not in parts:
            continue
        if part in ("process", "cluster"):
            recheck_source(res, part)
        lines, part_ok = await run_part(part, args, log_dir, res)
        ok &= part_ok
        print("\n".join(lines) + "\n", flush=True)
        if args.json:
            write_json(args.json, res)
    return res, ok


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.blast_worker is not None:
        return blast_worker(json.loads(args.blast_worker))
    parts = names(args.parts)
    bad = [p for p in parts if p not in PARTS]
    if bad:
        parser.error(f"unknown part(s) {bad}; choose from {','.join(PARTS)}")
    args.series = names(args.series)
    if any(s not in SERIES for s in args.series):
        parser.error(f"--series: choose from {', '.join(SERIES)}")
    if args.peers < 3 or args.core_count < 100 or args.step <= 0 or args.duration <= 0:
        parser.error("--peers >= 3, --core-count >= 100, --step and --duration > 0")
    with log_root(args.log_dir, "chatter-throughput-") as log_dir:
        # on Ctrl-C the harness has stopped the nodes, trio the sender processes
        done = run_trio(amain, args, parts, log_dir)
    if done is None:
        return 130
    return 0 if done[1] else 1


if __name__ == "__main__":
    sys.exit(main())
