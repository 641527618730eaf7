"""Measure primary-standby's failover: repeat the kill -9 scenario.

    flock /tmp/chatter-heavy.lock python3 examples/primary-standby/measure.py --runs 10

Each run starts fresh replicas, streams updates (one every 50 ms), kills the primary and its
chatterd with -9 after 40 acknowledgements, restarts it after the stream, and checks both
replicas. Prints median and max of the takeover time and the total duplicates and gaps
(updates missing), and writes every run to docs/results/primary-standby.json.
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
from scenario import failover_run  # noqa: E402

FIGURES = ("takeover_s", "max_client_stall_s", "catch_up_s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--updates", type=int, default=120)
    ap.add_argument("--out", type=Path, default=HERE.parent.parent / "docs" / "results" / "primary-standby.json")
    args = ap.parse_args()
    runs: list[dict[str, Any]] = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="primary-standby-") as d:
            r = failover_run(Path(d), updates=args.updates, kill_after=40)
        runs.append(r)
        p, o = r["promoted_replica"], r["restarted_replica"]
        print(
            f"run {i + 1}: takeover {r['takeover_s']:.3f} s, stall {r['max_client_stall_s']:.3f} s, "
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
    result = {
        "what": "primary-standby: kill -9 of the primary (and its chatterd) in a stream of updates every 50 ms",
        "definitions": {
            "takeover_s": "kill -> the client's first update acknowledged by the promoted standby",
            "max_client_stall_s": "longest time between two acknowledgements, minus the 50 ms pacing",
            "catch_up_s": "restart of the old primary (process start) -> it is in sync and a candidate again",
            "gaps": "acknowledged updates missing from a replica (both replicas, all runs)",
            "duplicates": "updates applied twice on a replica (both replicas, all runs)",
        },
        "profile": "local",
        "machine": f"{platform.node()} {platform.machine()} python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "summary": s,
        "runs": runs,
    }
    print(json.dumps(s), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")
    bad = s["duplicates"] or s["gaps"] or s["out_of_order"] or s["logs_differ"] or s["split_brain_runs"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
