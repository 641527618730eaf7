"""Measure failover-counter's takeovers: repeat the kill -9 (group, PID alone) and Ctrl-C scenarios.

    flock /tmp/chatter-heavy.lock python3 examples/failover-counter/measure.py --runs 10

Each run starts a fresh system (receiver, master, slave), lets the master count, stops it at
a random point of its one-second rhythm (kill -9 of the master and its chatterd, kill -9 of
the master's PID alone, whose chatterd then leaves by itself, or Ctrl-C), and reads the
receiver's record. Prints median and max of the takeover times and the total duplicates and
gaps, and writes every run to docs/results/failover-counter.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from scenario import MODES, failover_run  # noqa: E402

FIGURES = ("role_takeover_s", "takeover_s", "receiver_interval_s")


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(runs)}
    for f in FIGURES:
        values = [r[f] for r in runs]
        out[f] = {"median": round(statistics.median(values), 3), "max": round(max(values), 3)}
    out["duplicates"] = sum(r["duplicates"] for r in runs)
    out["gaps"] = sum(r["gaps"] for r in runs)
    out["out_of_order_runs"] = sum(not r["in_order"] for r in runs)
    out["rejected"] = sum(r["rejected"] for r in runs)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10, help="runs per scenario (default 10)")
    ap.add_argument("--modes", default=",".join(MODES), help="scenarios, comma-separated: " + ", ".join(MODES))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=HERE.parent.parent / "docs" / "results" / "failover-counter.json")
    args = ap.parse_args()
    bad = set(args.modes.split(",")) - set(MODES)
    if bad:
        ap.error(f"unknown scenario(s): {', '.join(sorted(bad))}")
    rng = random.Random(args.seed)
    result: dict[str, Any] = {
        "what": "failover-counter: master stopped at a random phase of its 1 s rhythm; slave continues",
        "definitions": {
            "role_takeover_s": "stop of the master -> the slave holds the role (its role-acquired, seen by polling)",
            "takeover_s": "stop of the master -> the receiver gets the slave's first count",
            "receiver_interval_s": "receiver: master's last count -> slave's first count (1.0 = no pause)",
            "modes": "kill9: SIGKILL to the master's process group (app and chatterd); pid: SIGKILL to the "
            "master app's PID alone (its chatterd runs --exit-with-parent); ctrlc: SIGINT to the app",
        },
        "profile": "local",
        "machine": f"{platform.node()} {platform.machine()} python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "scenarios": {},
    }
    failed = False
    for mode in args.modes.split(","):
        runs = []
        for i in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="failover-counter-") as d:
                r = failover_run(Path(d), mode, phase=rng.uniform(0.0, 0.95))
            runs.append(r)
            print(
                f"{mode} run {i + 1}: role {r['role_takeover_s']:.3f} s, first count {r['takeover_s']:.3f} s, "
                f"interval {r['receiver_interval_s']:.3f} s, counts {r['last_master_count']}->"
                f"{r['first_slave_count']}, dups {r['duplicates']}, gaps {r['gaps']}",
                flush=True,
            )
        s = summary(runs)
        result["scenarios"][mode] = {"summary": s, "runs": runs}
        failed |= bool(s["duplicates"] or s["gaps"] or s["out_of_order_runs"])
        print(f"{mode}: {json.dumps(s)}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
