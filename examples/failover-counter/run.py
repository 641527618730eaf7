"""The failover-counter demo in one command:

    python3 examples/failover-counter/run.py

Starts the receiver and two senders ("master", priority 2, and "slave", priority 1), each
with its own chatterd on 127.0.0.1 (free ports), and shows their output. Then: Ctrl-C of the
master (the slave continues at once), a restart of the master (it takes the role back:
higher priority), kill -9 of the master and its chatterd (the slave continues within ~2 s),
another restart of the master, and kill -9 of the master's PID alone (its chatterd, started
with --exit-with-parent, leaves by itself: the slave continues at once). The receiver checks
every count: no number skipped or repeated. Everything is stopped by PID at the end; logs
are kept in a new temporary directory, shown at the start and at the end.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scenario import running_system, summarize


def say(text: str) -> None:
    print(f"\n======== {text}", flush=True)


def slave_takes_over(system: Any, stop: Callable[[], None]) -> float:
    """Stop the master with ``stop``; wait for the slave's counts: seconds to its first one."""
    t_stop = time.time()
    stop()
    system.wait_counts("slave", 1, timeout=20, after=t_stop)
    first = next(c for c in system.counts() if c["sender"] == "slave" and c["received_at"] > t_stop)
    system.wait_counts("slave", 3, timeout=20, after=t_stop)
    return float(first["received_at"] - t_stop)


def restart_master(system: Any) -> None:
    t_start = time.time()
    system.start("master")
    system.wait_counts("master", 3, timeout=30, after=t_start)


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="failover-counter-"))
    say(f"starting receiver, master, slave (logs in {workdir})")
    with running_system(workdir, echo=True) as system:
        system.wait_counts("master", 4, timeout=30)
        say("Ctrl-C of the master: the slave takes over at once")
        slave_takes_over(system, system.apps["master"].interrupt)
        say("restarting the master: it rejoins and takes the role back (priority 2 > 1)")
        restart_master(system)
        say("kill -9 of the master and its chatterd: the slave takes over when the failure is detected")
        took = slave_takes_over(system, system.apps["master"].crash)
        say("restarting the master: it takes the role back")
        restart_master(system)
        say("kill -9 of the master's PID alone: its chatterd sees its parent die and leaves, the slave continues")
        took_pid = slave_takes_over(system, system.apps["master"].kill_app)
        say("stopping everything")
    result = summarize(system.counts())
    say(
        f"receiver got {result['received']} counts: gaps {result['gaps']}, duplicates {result['duplicates']}, "
        f"rejected {result['rejected']}; the slave's first count came {took:.2f} s after kill -9 of the master's "
        f"group, {took_pid:.2f} s after kill -9 of its PID alone"
    )
    say(f"logs kept in {workdir}")
    ok = result["gaps"] == 0 and result["duplicates"] == 0 and result["in_order"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
