"""The whole scenario in one command: three stations (supervisor + worker) on loopback.

    python3 examples/supervised-workers/run.py [--stations 3] [--keep DIR]

1. start s1..s3 (candidates for role leader) and w1..w3; wait until everyone sees everyone
2. kill -9 a worker: the leader restarts it
3. hang a worker (SIGUSR1 blocks its event loop): its watchdog ends it (exit 70), the leader restarts it
4. kill -9 the leader: another supervisor takes the role, restarts the old leader (which
   rejoins as a standby) and then a worker killed after the takeover
5. stop everything, by PID

Logs, pidfiles and the restart file go to a new temporary directory (or --keep DIR), whose path is
printed at the start and at the end; it is kept.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

from sw_system import System

STEP_TIMEOUT = 30.0


def say(t0: float, text: str) -> None:
    print(f"[{time.monotonic() - t0:6.2f} s] {text}", flush=True)


def restarted_by(system: System, name: str, since: int) -> str | None:
    """Which supervisor announced a restart of ``name`` (in the events after ``since``)."""
    for s in system.live_supervisors():
        for row in system.events(s, since):
            body = row["payload"].get("restart") if row["kind"] == "user" else None
            if body and body["name"] == name:
                return f"{body['by']} (epoch {body['epoch']})"
    return None


def last_seq(system: System) -> int:
    return max((row["seq"] for row in system.events(system.live_supervisors()[0])), default=0)


def demo(system: System) -> None:
    t0 = time.monotonic()
    say(t0, f"starting {', '.join(system.members)} (logs in {system.dir})")
    system.start()
    system.wait_healthy(STEP_TIMEOUT)
    leader = system.leader()
    assert leader is not None
    say(t0, f"all {len(system.members)} members alive everywhere; leader: {leader[0]} (epoch {leader[1]})")

    w = "w1"
    inc = system.incarnation(w)
    since = last_seq(system)
    say(t0, f"kill -9 {w} (pid {system.kill(w)})")
    system.wait(lambda: system.alive_everywhere(w, newer_than=inc), STEP_TIMEOUT, f"{w} restarted")
    say(t0, f"{w} is back (pid {system.pid(w)}), restarted by {restarted_by(system, w, since)}")

    w = "w2"
    inc = system.incarnation(w)
    since = last_seq(system)
    proc = system.members[w].proc
    say(t0, f"hang {w} (SIGUSR1 to pid {system.kill(w, signal.SIGUSR1)}: its loop blocks)")
    assert proc is not None
    status = system.wait(lambda: proc.poll() is not None and (proc.returncode,), STEP_TIMEOUT, f"{w} exits")[0]
    say(t0, f"{w} exited by itself with status {status} (70 = watchdog)")
    system.wait(lambda: system.alive_everywhere(w, newer_than=inc), STEP_TIMEOUT, f"{w} restarted")
    say(t0, f"{w} is back (pid {system.pid(w)}), restarted by {restarted_by(system, w, since)}")

    old = leader[0]
    old_inc = system.incarnation(old)
    since = last_seq(system)
    say(t0, f"kill -9 the leader {old} (pid {system.kill(old)})")
    new = system.wait(lambda: (lead := system.leader()) and lead[0] != old and lead, STEP_TIMEOUT, "new leader")
    say(t0, f"{new[0]} took over the leader role (epoch {new[1]})")
    system.wait(lambda: system.alive_everywhere(old, newer_than=old_inc), STEP_TIMEOUT, f"{old} restarted")
    say(t0, f"{old} is back (pid {system.pid(old)}), restarted by {restarted_by(system, old, since)}")
    lead = system.leader()
    say(t0, f"leader now: {lead[0] if lead else '?'} ({old} rejoined as a standby)")

    w = "w3"
    inc = system.incarnation(w)
    since = last_seq(system)
    say(t0, f"kill -9 {w} (pid {system.kill(w)})")
    system.wait(lambda: system.alive_everywhere(w, newer_than=inc), STEP_TIMEOUT, f"{w} restarted")
    say(t0, f"{w} is back (pid {system.pid(w)}), restarted by {restarted_by(system, w, since)}")
    system.wait_healthy(STEP_TIMEOUT)
    say(t0, "all members alive again; stopping everything")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stations", type=int, default=3)
    p.add_argument(
        "--keep", type=Path, default=None, help="put logs and pidfiles in DIR (default: a new temporary one, kept)"
    )
    args = p.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="supervised-workers-"))
    with System(work, stations=args.stations) as system:
        try:
            demo(system)
        except (TimeoutError, AssertionError) as e:
            print(f"FAILED: {e} (logs kept in {system.dir})", file=sys.stderr)
            return 1
    print(f"done: every process stopped; logs kept in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
