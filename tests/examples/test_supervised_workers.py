"""examples/supervised-workers: the seed's leader-elected recovery, with real processes.

Three supervisors (candidates for role ``leader``) and three workers on loopback. The test
kills a worker (the leader restarts it), hangs one (its watchdog ends it with status 70, the
leader restarts it), then kills the leader (another supervisor takes the role with a higher
epoch, restarts the old leader, which rejoins as a standby, and restarts a worker killed
after the takeover), then kills the new leader's PID alone (each member embeds its chatter
node, so that is its node's death too: a third leader takes over and restarts it), and last
stops a worker with SIGSTOP (its watchdog cannot fire: the leader's restart command SIGKILLs
it once it answers no direct probe, and starts a new one). Bounds are generous: timings are
measured by measure.py, not here.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from chatterd.supervision import WATCHDOG_EXIT

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "supervised-workers"))

import sw_members
from sw_system import System

pytestmark = pytest.mark.e2e

TIMEOUT = 30.0  # each step takes ~1-3 s on an idle machine
STOPPED_RECOVERY = 10.0  # kill -STOP of a worker to its new instance alive everywhere (~2 s idle)


def restarters(system: System, name: str, since: float) -> set[tuple[str, int]]:
    """(leader, epoch) of every restart of ``name`` announced after ``since`` (wall clock)."""
    found = set()
    for s in system.live_supervisors():
        for row in system.events(s):
            body = row["payload"].get("restart") if row["kind"] == "user" else None
            if body and body["name"] == name and row["received_at"] >= since:
                found.add((body["by"], body["epoch"]))
    return found


def restarted(system: System, name: str, inc: int, old_pid: int) -> bool:
    pid = system.pid(name)
    return pid is not None and pid != old_pid and system.alive_everywhere(name, newer_than=inc)


def test_leader_restarts_dead_and_hung_workers_and_is_replaced_when_killed(tmp_path: Path) -> None:
    pids: set[int] = set()
    with System(tmp_path) as system:
        system.start()
        system.wait_healthy(45.0)
        leader, epoch = system.leader() or ("", 0)
        assert leader in system.supervisors()
        row = next(r for r in system.get("w1", "/v1/roles") if r["role"] == "leader")
        assert set(row["candidates"]) == set(system.supervisors())  # workers are not candidates
        pids |= {p for n in system.members if (p := system.pid(n))}

        # 1. kill -9 a worker: the leader restarts it, same name, new process, new incarnation
        inc, t0, old = system.incarnation("w1"), time.time(), system.kill("w1")
        system.wait(lambda: restarted(system, "w1", inc, old), TIMEOUT, "w1 restarted after kill -9")
        assert restarters(system, "w1", t0) == {(leader, epoch)}
        pids.add(system.pid("w1") or 0)

        # 2. hang a worker: its watchdog ends it (status 70), then the leader restarts it
        proc = system.members["w2"].proc
        assert proc is not None
        inc, t0, old = system.incarnation("w2"), time.time(), system.kill("w2", signal.SIGUSR1)
        system.wait(lambda: proc.poll() is not None, TIMEOUT, "hung w2 exits")
        assert proc.returncode == WATCHDOG_EXIT, system.log_text("w2")[-2000:]
        assert '"watchdog_exit"' in system.log_text("w2")
        system.wait(lambda: restarted(system, "w2", inc, old), TIMEOUT, "w2 restarted after its watchdog exit")
        assert restarters(system, "w2", t0) == {(leader, epoch)}
        pids.add(system.pid("w2") or 0)

        # 3. kill -9 the leader: another supervisor takes the role with a higher epoch ...
        old_leader_inc, t0, old = system.incarnation(leader), time.time(), system.kill(leader)

        def new_leader() -> tuple[str, int] | None:
            lead = system.leader()
            return lead if lead is not None and lead[0] != leader else None

        successor, new_epoch = system.wait(new_leader, TIMEOUT, f"a new leader after kill -9 of {leader}")
        assert new_epoch > epoch
        # ... restarts the old leader, which rejoins as a standby ...
        system.wait(lambda: restarted(system, leader, old_leader_inc, old), TIMEOUT, f"{leader} restarted")
        assert restarters(system, leader, t0) == {(successor, new_epoch)}
        assert system.leader() == (successor, new_epoch)
        pids.add(system.pid(leader) or 0)
        # ... and restarts the workers that die from then on
        inc, t0, old = system.incarnation("w3"), time.time(), system.kill("w3")
        system.wait(lambda: restarted(system, "w3", inc, old), TIMEOUT, "w3 restarted by the new leader")
        assert restarters(system, "w3", t0) == {(successor, new_epoch)}
        pids.add(system.pid("w3") or 0)
        system.wait_healthy(TIMEOUT)
        assert system.leader() == (successor, new_epoch)

        # 4. kill -9 of the new leader's PID alone (not its process group): its chatter node
        # runs in that process, so it dies with it and the role moves on the same way
        inc, t0, old = system.incarnation(successor), time.time(), system.kill(successor, group=False)

        def third_leader() -> tuple[str, int] | None:
            lead = system.leader()
            return lead if lead is not None and lead[0] != successor else None

        third, third_epoch = system.wait(third_leader, TIMEOUT, f"a new leader after kill -9 of {successor}'s PID")
        assert third_epoch > new_epoch
        system.wait(lambda: restarted(system, successor, inc, old), TIMEOUT, f"{successor} restarted")
        assert restarters(system, successor, t0) == {(third, third_epoch)}
        pids.add(system.pid(successor) or 0)
        system.wait_healthy(TIMEOUT)
        assert system.leader() == (third, third_epoch)

        # 5. kill -STOP a worker (issue #12): nothing in it runs, not even its watchdog, so the
        # leader's restart command ends it (it answers no direct probe) and starts a new one
        inc, t0, old = system.incarnation("w1"), time.time(), system.kill("w1", signal.SIGSTOP)
        pids.add(old)
        system.wait(lambda: restarted(system, "w1", inc, old), TIMEOUT, "w1 restarted after kill -STOP")
        assert time.time() - t0 < STOPPED_RECOVERY, f"{time.time() - t0:.1f} s"  # ~2 s on an idle machine
        assert not sw_members.pid_alive(old), "the stopped instance still exists"
        assert restarters(system, "w1", t0) == {(third, third_epoch)}
        assert "no answer to direct probes" in system.log_text(third)
        pids.add(system.pid("w1") or 0)
    assert not [p for p in pids - {0} if sw_members.pid_alive(p)], "stray processes after stop()"
