"""Measure the sequencer's failover: takeover time, duplicates, gaps, split epochs.

    flock /tmp/chatter-heavy.lock python3 examples/sequencer/measure.py --runs 10

One etcd for all runs; per run three fresh engines (a fresh key prefix and order log), orders
streamed through the gateway, and the primary failed a third of the way through:
``kill`` (SIGKILL to its app and sidecar), ``kill_app`` (SIGKILL to the app's PID alone: its
sidecar gives up the role when the app's lease runs out) and ``pause`` (SIGSTOP for 5 s,
then SIGCONT).
Takeover = from the signal to the first order acknowledged by the new primary. Writes
docs/results/sequencer.json (or --out) and prints the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sequencer import APP_LEASE_TTL, LOCK_TTL, PAUSE_S, REPO, Etcd, Sequencer, run_scenario, summary

COUNTS = ["duplicates", "gaps", "same_epoch_two_engines", "epoch_regressions"]


def main() -> int:
    p = argparse.ArgumentParser(description="measure the sequencer's failover")
    p.add_argument("--runs", type=int, default=10, help="runs per scenario (default 10)")
    p.add_argument("--orders", type=int, default=300, help="orders per run (default 300)")
    p.add_argument("--interval", type=float, default=0.01, help="seconds between orders (default 0.01)")
    p.add_argument(
        "--scenarios", default="kill,kill_app,ctrlc,pause", help="comma-separated: kill, kill_app, ctrlc, pause"
    )
    p.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "sequencer.json")
    a = p.parse_args()
    kinds = [k.strip() for k in a.scenarios.split(",") if k.strip()]
    unknown = set(kinds) - {"kill", "kill_app", "ctrlc", "pause"}
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="sequencer-measure-") as tmp:
        work = Path(tmp)
        etcd = Etcd(work)
        try:
            for run in range(a.runs):
                for kind in kinds:
                    with Sequencer(work / f"{kind}{run}", etcd_url=etcd.url, prefix=f"m{run}-{kind}/") as seq:
                        res = run_scenario(seq, kind, n=a.orders, interval=a.interval)
                    res["run"] = run
                    res["epochs"] = res.pop("check")["epochs"]
                    results[kind].append(res)
                    extra = (
                        f" woken-appended {res['woken_appended_after_resume']}"
                        f" woken-refused {res['woken_stale_rejections']}"
                        if kind == "pause"
                        else ""
                    )
                    print(
                        f"run {run} {kind:8}: takeover {res['takeover_s']} s, {res['failed']}@{res['old_epoch']}"
                        f" -> {res['new_primary']}@{res['new_epoch']}, dup {res['duplicates']} gaps {res['gaps']}"
                        f" split {res['same_epoch_two_engines']}{extra}",
                        flush=True,
                    )
        finally:
            etcd.stop()
    out: dict[str, Any] = {
        "what": "examples/sequencer: 3 engines (app + chatterd --role leader --lock etcd --expect 3, --profile local,"
        f" --lock-ttl {LOCK_TTL:g} --lease-ttl {APP_LEASE_TTL:g}, renewed by the app); the primary killed (kill:"
        f" SIGKILL to app and sidecar; kill_app: to the app's PID alone) or paused (SIGSTOP {PAUSE_S:g} s) mid-stream;"
        " takeover = signal -> first order acknowledged by the new primary",
        "date": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_at_start": os.getloadavg()},
        "runs": a.runs,
        "orders_per_run": a.orders,
        "order_interval_s": a.interval,
    }
    ok = True
    for kind, rows in results.items():
        takeovers = [r["takeover_s"] for r in rows if r["takeover_s"] is not None]
        s: dict[str, Any] = {
            "takeover_s": summary(takeovers) if takeovers else None,
            "runs_without_takeover": sum(1 for r in rows if r["takeover_s"] is None),
            **{c: sum(r[c] for r in rows) for c in COUNTS},
            "all_ok": all(r["ok"] for r in rows),
        }
        if kind == "pause":
            s["woken_appended_after_resume"] = sum(r["woken_appended_after_resume"] for r in rows)
            s["woken_stale_rejections"] = sum(r["woken_stale_rejections"] for r in rows)
        ok = ok and s["all_ok"] and s["runs_without_takeover"] == 0
        out[kind] = {"summary": s, "runs": rows}
        print(f"{kind}: {json.dumps(s)}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
