"""The split-brain-safe sequencer, end to end, in one command:

    python3 examples/sequencer/run.py

Starts etcd and three engines (each an engine app plus its chatterd sidecar holding the role
``engine`` through an etcd lease lock) on 127.0.0.1, streams numbered orders through a gateway,
kill -9s the primary mid-stream (app and sidecar), then (with fresh engines) kill -9s the
primary's app alone (its sidecar gives the role up when the app's lease on it runs out), then
pauses the primary with SIGSTOP for longer than its lease and wakes it up. After each, it
checks the shared order log: every order id exactly once, never two engines in one epoch. Every
process is stopped at the end, by PID. Exit status 0 if all three checks pass. The logs (etcd's,
each app's and each sidecar's, and the order logs) go to a new temporary directory, or to
``--keep DIR``, whose path is printed at the start and at the end; it is kept.

    python3 examples/sequencer/run.py --serve [--dir DIR]

Starts etcd (on 127.0.0.1:2379 if that port is free, as ``etcdctl`` expects) and three engines,
and keeps them running until Ctrl-C, so the seed's steps can be followed by hand in other
terminals: it prints the commands (``gateway.py 8080``, ``producer.py``, ``etcdctl get
engine/leader``, the kill -9 of the primary, the awk check of the log) and each change of
primary. Its files go to DIR (default /tmp/chatter-sequencer): the order log
``central_order_book.log``, ``cluster.json`` (where gateway.py finds a sidecar to ask for the
engines) and each process's output. On Ctrl-C it checks the log and stops every process by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from orderlog import read_log, verify
from sequencer import HOST, PREFIX, ROLE, SERVE_DIR, Etcd, Sequencer, run_scenario

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


ETCD_DEFAULT_PORT = 2379  # where etcdctl looks without --endpoints
OURS = ["etcd-data", "central_order_book.log", "cluster.json", "etcd.log", "e*.app.log", "e*.sidecar.log"]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _clear(work: Path) -> None:
    """Remove what an earlier --serve left in ``work`` (only our own files): a fresh cluster."""
    for pattern in OURS:
        for f in work.glob(pattern):
            if f.is_dir():
                shutil.rmtree(f)
            else:
                f.unlink()


def _print_howto(seq: Sequencer, etcd: Etcd, work: Path) -> None:
    here = Path(__file__).resolve().parent
    rel = here.relative_to(Path.cwd()) if here.is_relative_to(Path.cwd()) else here
    say(f"etcd {etcd.url}; the lock key is {PREFIX}{ROLE}; files in {work}")
    for e in seq.engines:
        assert e.app is not None and e.sidecar is not None
        say(f"  {e.name}: app pid {e.app.pid} ({e.url}), sidecar pid {e.sidecar.pid} ({e.sidecar_url}),"
            f" process group {e.sidecar.pid}")  # fmt: skip
    env = "" if etcd.client_port == ETCD_DEFAULT_PORT else f"export ETCDCTL_ENDPOINTS={etcd.url}; "
    extra = "" if work == SERVE_DIR else f" --cluster {work / 'cluster.json'}"
    print(
        "\nIn other terminals:\n"
        f"  python3 {rel}/gateway.py 8080{extra}\n"
        f"  python3 {rel}/producer.py --count 1000 --rate 50\n"
        f"  {env}etcdctl get {PREFIX}{ROLE}     # or: etcdctl watch {PREFIX}{ROLE}\n"
        "  kill -9 -GROUP                # the primary, app + sidecar (its process group, above)\n"
        "  kill -9 APP_PID               # or the primary's engine app alone\n"
        f"  cat {work / 'central_order_book.log'} | awk -F'[][]' '{{print $2}}' | sort | uniq -d\n"
        "Ctrl-C here stops every process.\n",
        flush=True,
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(work: Path) -> int:
    """etcd and three engines until Ctrl-C (or SIGTERM); print the commands and each change of primary."""
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started in the background, where SIGINT is ignored
        signal.signal(sig, _interrupt)
    work.mkdir(parents=True, exist_ok=True)
    _clear(work)
    etcd = Etcd(work, ETCD_DEFAULT_PORT if _port_free(ETCD_DEFAULT_PORT) else None)
    try:
        with Sequencer(work, etcd_url=etcd.url) as seq:
            primary = seq.wait_primary()
            cluster = {
                "etcd": etcd.url, "log": str(seq.log_path), "chatter": [e.sidecar_url for e in seq.engines],
                "engines": {e.name: {"app": e.url, "sidecar": e.sidecar_url} for e in seq.engines},
            }  # fmt: skip
            (work / "cluster.json").write_text(json.dumps(cluster, indent=1) + "\n")
            say(f"3 engines up; primary {primary.name} in epoch {primary.state()['accepting_epoch']}")
            _print_howto(seq, etcd, work)
            last = primary.name
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(0.5)
                    now = seq.primary()
                    if now is not None and now.name != last:
                        with contextlib.suppress(OSError, ValueError):
                            say(f"primary now {now.name} in epoch {now.state()['accepting_epoch']}")
                        last = now.name
            ids = [int(r["id"]) for r in read_log(seq.log_path) if r["kind"] == "order"]
            check = verify(seq.log_path, max(ids, default=0))
            say(f"log: {check['orders']} orders, duplicates {len(check['duplicates'])}, gaps {len(check['gaps'])}, "
                f"epochs accepted by two engines {len(check['same_epoch_two_engines'])}, "
                f"epoch regressions {check['epoch_regressions']}")  # fmt: skip
    finally:
        etcd.stop()
        say("stopped etcd and every engine")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description="the split-brain-safe sequencer demo")
    p.add_argument("--orders", type=int, default=600, help="orders per scenario (default 600)")
    p.add_argument("--interval", type=float, default=0.01, help="seconds between orders (default 0.01)")
    p.add_argument("--keep", type=Path, help="put the logs in this directory (default: a new temporary one, kept)")
    p.add_argument("--serve", action="store_true", help="start etcd and 3 engines, keep them until Ctrl-C")
    p.add_argument("--dir", type=Path, default=SERVE_DIR, help=f"--serve's files (default {SERVE_DIR})")
    a = p.parse_args()
    if a.serve:
        return serve(a.dir)
    ok = True
    work = a.keep or Path(tempfile.mkdtemp(prefix="sequencer-"))
    work.mkdir(parents=True, exist_ok=True)
    say(f"starting etcd on 127.0.0.1 (logs in {work})")
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
        say(f"stopped etcd and every engine; logs kept in {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
