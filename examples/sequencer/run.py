"""The split-brain-safe sequencer, end to end, in one command:

    python3 examples/sequencer/run.py

Starts etcd and three engines (each an engine app plus its chatterd sidecar holding the role
``engine`` through an etcd lease lock) on 127.0.0.1, streams numbered orders through a gateway,
kill -9s the primary mid-stream (app and sidecar), then (with fresh engines) kill -9s the
primary's app alone (its sidecar gives the role up when the app's lease on it runs out), then
pauses the primary with SIGSTOP for longer than its lease and wakes it up. After each, it
checks the shared order log: every order id exactly once, never two engines in one epoch. Every
process is stopped at the end, by PID. Exit status 0 if all three checks pass.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sequencer import Etcd, Sequencer, run_scenario

T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.2f}s] {text}", flush=True)


def report(res: dict[str, Any]) -> None:
    say(
        f"{res['failed']} (epoch {res['old_epoch']}) -> {res['new_primary']} (epoch {res['new_epoch']}): "
        f"takeover {res['takeover_s']} s"
    )
    say(
        f"log: {res['check']['orders']} orders of {res['orders']}, duplicates {res['duplicates']}, "
        f"gaps {res['gaps']}, epochs accepted by two engines {res['same_epoch_two_engines']}, "
        f"epoch regressions {res['epoch_regressions']}; retries answered 'already in the log': "
        f"{res['retried_duplicates_acked']}"
    )
    epochs = ", ".join(f"{e}:{who}" for e, who in res["check"]["epochs"].items())
    say(f"epochs in the log (epoch:engine): {epochs}")
    if res["kind"] == "pause":
        say(
            f"{res['failed']} after SIGCONT: role-lost {res['woken_role_lost']}, orders it appended "
            f"after waking: {res['woken_appended_after_resume']}, orders it refused as stale: "
            f"{res['woken_stale_rejections']}"
        )
    say("OK" if res["ok"] else "FAILED")


def main() -> int:
    p = argparse.ArgumentParser(description="the split-brain-safe sequencer demo")
    p.add_argument("--orders", type=int, default=600, help="orders per scenario (default 600)")
    p.add_argument("--interval", type=float, default=0.01, help="seconds between orders (default 0.01)")
    p.add_argument("--keep", type=Path, help="keep logs in this directory (default: a temporary one)")
    a = p.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="sequencer-") as tmp:
        work = a.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        say(f"starting etcd on 127.0.0.1 (files in {work})")
        etcd = Etcd(work)
        try:
            for i, kind in enumerate(["kill", "kill_app", "pause"]):
                say(f"--- scenario {i + 1}: {kind} the primary mid-stream ---")
                with Sequencer(work / kind, etcd_url=etcd.url, prefix=f"seq-{kind}/") as seq:
                    primary = seq.wait_primary()
                    st = primary.state()
                    say(f"3 engines up; primary {primary.name} in epoch {st['accepting_epoch']}; "
                        f"streaming {a.orders} orders")  # fmt: skip
                    res = run_scenario(seq, kind, n=a.orders, interval=a.interval, say=say)
                    report(res)
                    ok = ok and res["ok"]
                    if kind == "pause":
                        ok = ok and res["woken_appended_after_resume"] == 0
                    say(f"order log: {seq.log_path}")
        finally:
            etcd.stop()
            say("stopped etcd and every engine")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
