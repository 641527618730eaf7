"""Measure primary-standby's failover: repeat the kill -9 scenario (process group, PID alone).

    flock /tmp/chatter-heavy.lock python3 examples/primary-standby/measure.py --runs 10
    flock /tmp/chatter-heavy.lock python3 examples/primary-standby/measure.py --shards 8 --runs 5 --modes pid,kill9

Each run starts fresh replicas, streams updates (one every 50 ms), kills the primary with -9
after 40 acknowledgements (``kill9``: with its chatterd, its process group; ``pid``: its PID
alone, whose chatterd then leaves by itself), restarts it after the stream, and checks both
replicas, for each mode of ``--modes``. Prints median and max of the takeover time and the total duplicates and gaps
(updates missing), and writes every run to docs/results/primary-standby.json. With ``--shards S``
it repeats the sharded scenario (shardrun.py, 3 replicas) instead and writes
docs/results/primary-standby-shards.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from scenario import MODES, failover_run  # noqa: E402
from shardrun import shard_run  # noqa: E402

FIGURES = ("takeover_s", "max_client_stall_s", "catch_up_s")
SHARD_FIGURES = (
    "roles_moved_s",
    "served_again_s",
    "catch_up_s",
    "take_back_s",
    "taken_back_served_s",
    "chatterd_to_candidate_s",
    "max_client_stall_s",
)


def measure_mode(mode: str, n: int, updates: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``n`` runs of one kill mode; returns the runs and their summary (medians, maxima, totals)."""
    runs: list[dict[str, Any]] = []
    for i in range(n):
        with tempfile.TemporaryDirectory(prefix="primary-standby-") as d:
            r = failover_run(Path(d), updates=updates, kill_after=40, mode=mode)
        runs.append(r)
        p, o = r["promoted_replica"], r["restarted_replica"]
        print(
            f"{mode} run {i + 1}: takeover {r['takeover_s']:.3f} s, stall {r['max_client_stall_s']:.3f} s, "
            f"catch-up {r['catch_up_s']:.3f} s, retried {r['retried_updates']}, dups {p['duplicates']}+"
            f"{o['duplicates']}, missing {p['missing']}+{o['missing']}, identical {r['logs_identical']}, "
            f"primaries at once {r['max_primaries_at_once']}",
            flush=True,
        )
    s: dict[str, Any] = {"runs": len(runs)}
    for f in FIGURES:
        v = [r[f] for r in runs]
        s[f] = {"median": round(statistics.median(v), 3), "max": round(max(v), 3)}
    reps = [r[k] for r in runs for k in ("promoted_replica", "restarted_replica")]
    s["duplicates"] = sum(c["duplicates"] for c in reps)
    s["gaps"] = sum(c["missing"] for c in reps)
    s["out_of_order"] = sum(not c["in_order"] for c in reps)
    s["logs_differ"] = sum(not r["logs_identical"] for r in runs)
    s["split_brain_runs"] = sum(r["max_primaries_at_once"] > 1 for r in runs)
    s["fail_back_runs"] = sum(r["primary_after_restart"] != r["promoted"] for r in runs)
    return runs, s


def measure_shards(mode: str, n: int, shards: int, clients: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``n`` runs of the sharded scenario; returns the runs and their summary."""
    runs: list[dict[str, Any]] = []
    for i in range(n):
        with tempfile.TemporaryDirectory(prefix="primary-standby-shards-") as d:
            r = shard_run(Path(d), shards=shards, mode=mode, clients=clients)
        runs.append(r)
        print(
            f"{mode} run {i + 1}: killed {r['killed']} {r['held_before_kill']}, moved {r['moved_on_kill']} in "
            f"{r['roles_moved_s']:.3f} s, served again {r['served_again_s']} s; restart: candidate "
            f"{r['catch_up_s']:.3f} s, took back {r['moved_on_restart']} at {r['take_back_s']:.3f} s; stall "
            f"{r['max_client_stall_s']:.3f} s; dups {r['duplicates']} missing {r['missing']}",
            flush=True,
        )
    s: dict[str, Any] = {"runs": len(runs)}
    for f in SHARD_FIGURES:
        v = [r[f] for r in runs if r[f] is not None]
        s[f] = {"median": round(statistics.median(v), 3), "max": round(max(v), 3)} if v else None
    for f in ("duplicates", "missing", "extra", "updates", "retried_updates"):
        s[f] = sum(r[f] for r in runs)
    for f in ("in_order", "stamps_match", "ack_epochs_monotone", "logs_identical", "data_identical"):
        s[f"not_{f}"] = sum(not r[f] for r in runs)
    s["other_shards_moved_on_kill"] = sum(not r["only_killed_moved"] for r in runs)
    s["others_moved_on_restart"] = sum(not r["only_to_restarted"] for r in runs)
    s["shards_taken_back"] = [len(r["moved_on_restart"]) for r in runs]
    return runs, s


def main_shards(args: argparse.Namespace) -> int:
    scenarios: dict[str, Any] = {}
    failed = False
    for mode in args.modes.split(","):
        runs, s = measure_shards(mode, args.runs, args.shards, args.clients)
        scenarios[mode] = {"summary": s, "runs": runs}
        print(f"{mode}: {json.dumps(s)}", flush=True)
        failed |= bool(s["duplicates"] or s["missing"] or s["extra"] or any(v for k, v in s.items() if "not_" in k))
    name = "primary-standby-shards" + (f"-{args.clients}clients" if args.clients > 1 else "")
    out = args.out or HERE.parent.parent / "docs" / "results" / f"{name}.json"
    result = {
        "what": f"primary-standby --shards {args.shards}, {args.clients} client(s): 3 replicas, kill -9 of "
        "shard-0's primary, restart",
        "definitions": {
            "roles_moved_s": "kill -> the survivors hold every shard, balanced (role table polled every 50 ms)",
            "served_again_s": "kill -> every moved shard acknowledged an update by its new primary",
            "catch_up_s": "restart (process start) -> caught up on every shard and a candidate",
            "take_back_s": "restart (process start) -> it holds its share again (role table)",
            "chatterd_to_candidate_s": "the restarted replica's chatterd started -> its candidacy tag set (its log)",
            "taken_back_served_s": "restart -> every shard it took back acknowledged an update by it",
            "max_client_stall_s": "longest time between two acknowledgements, minus the 50 ms pacing",
        },
        "profile": "local",
        "machine": f"{platform.node()} {platform.machine()} python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "scenarios": scenarios,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {out}")
    return 1 if failed else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--updates", type=int, default=120)
    ap.add_argument("--modes", default=",".join(MODES), help="kill modes, comma-separated: " + ", ".join(MODES))
    ap.add_argument("--shards", type=int, default=0, help="measure the sharded scenario with this many shards")
    ap.add_argument("--clients", type=int, default=1, help="concurrent clients (with --shards)")
    ap.add_argument("--out", type=Path, help="default: docs/results/primary-standby[-shards[-Nclients]].json")
    args = ap.parse_args()
    bad_modes = set(args.modes.split(",")) - set(MODES)
    if bad_modes:
        ap.error(f"unknown mode(s): {', '.join(sorted(bad_modes))}")
    if args.shards:
        return main_shards(args)
    args.out = args.out or HERE.parent.parent / "docs" / "results" / "primary-standby.json"
    scenarios: dict[str, Any] = {}
    failed = False
    for mode in args.modes.split(","):
        runs, s = measure_mode(mode, args.runs, args.updates)
        scenarios[mode] = {"summary": s, "runs": runs}
        print(f"{mode}: {json.dumps(s)}", flush=True)
        failed |= bool(s["duplicates"] or s["gaps"] or s["out_of_order"] or s["logs_differ"] or s["split_brain_runs"])
    result = {
        "what": "primary-standby: the primary stopped (kill -9, Ctrl-C) in a stream of updates every 50 ms",
        "definitions": {
            "takeover_s": "kill -> the client's first update acknowledged by the promoted standby",
            "max_client_stall_s": "longest time between two acknowledgements, minus the 50 ms pacing",
            "catch_up_s": "restart of the old primary (process start) -> it is in sync and a candidate again",
            "modes": "kill9: SIGKILL to the primary's process group (replica and chatterd); pid: SIGKILL to the "
            "replica's PID alone (its chatterd runs --exit-with-parent); ctrlc: SIGINT to the replica (it steps "
            "down, then stops its chatterd: a graceful leave)",
            "gaps": "acknowledged updates missing from a replica (both replicas, all runs)",
            "duplicates": "updates applied twice on a replica (both replicas, all runs)",
        },
        "profile": "local",
        "machine": f"{platform.node()} {platform.machine()} python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "scenarios": scenarios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
