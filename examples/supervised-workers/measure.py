"""Measure the supervised-workers system: leader takeover and worker restart times.

    flock /tmp/chatter-heavy.lock python3 examples/supervised-workers/measure.py --runs 10

One system (3 stations) is started; each run then does, waiting for the system to be whole
again in between:

- kill -9 of a worker: time to member-failed on the leader (detected), to the leader's
  restart announcement (restart issued), to member-recover on the leader (alive again);
- hang of a worker (SIGUSR1 blocks its loop): time to its exit by the watchdog (process gone,
  polled every 10 ms), then the same three times;
- kill -9 of the leader, once of its process group and once of its PID alone (each member
  embeds its chatter node, so both end the node): time to member-failed on the successor, to
  role-acquired on the successor (takeover), and to the old leader being alive again
  (restarted by the successor).

Times are from the signal (wall clock, time.time()) to the event's ``received_at`` in the
observer's /v1/events (same host, same clock). Results: JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sw_members
from sw_system import REPO, System

STEP_TIMEOUT = 30.0
START_TIMEOUT = 45.0  # six fresh processes joining on a loaded machine (the test allows as much)


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
        "min": round(min(values), 3),
    }


def last_seq(system: System, observer: str) -> int:
    return max((row["seq"] for row in system.events(observer)), default=0)


def first_at(rows: list[dict[str, Any]], t0: float, kinds: tuple[str, ...], origin: str | None = None) -> float | None:
    """Seconds from t0 to the first row of one of ``kinds`` (about ``origin``) received after t0."""
    for row in rows:
        if row["kind"] in kinds and row["received_at"] >= t0 and (origin is None or row["origin"] == origin):
            return round(row["received_at"] - t0, 3)
    return None


def announced_at(rows: list[dict[str, Any]], t0: float, name: str) -> float | None:
    for row in rows:
        body = row["payload"].get("restart") if row["kind"] == "user" else None
        if body and body["name"] == name and row["received_at"] >= t0:
            return round(row["received_at"] - t0, 3)
    return None


def leader_now(system: System) -> str:
    lead = system.wait(system.leader, STEP_TIMEOUT, "an agreed leader")
    return lead[0]


def worker_restart(system: System, name: str, hang: bool) -> dict[str, Any]:
    leader = leader_now(system)
    since = last_seq(system, leader)
    inc = system.incarnation(name, leader)
    pid = system.pid(name)
    assert pid is not None
    watchdog_lines = system.log_text(name).count('"watchdog_exit"')
    t0 = time.time()
    if hang:
        os.kill(pid, signal.SIGUSR1)
    else:
        system.kill(name)
    sample: dict[str, Any] = {"member": name, "leader": leader}
    if hang:
        deadline = time.monotonic() + STEP_TIMEOUT
        while sw_members.pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        sample["exited_s"] = round(time.time() - t0, 3)
        sample["watchdog_exit"] = system.log_text(name).count('"watchdog_exit"') > watchdog_lines
    system.wait(lambda: system.alive_everywhere(name, newer_than=inc), STEP_TIMEOUT, f"{name} back")
    rows = system.events(leader, since)
    sample["detected_s"] = first_at(rows, t0, ("member-failed",), name)
    sample["restart_issued_s"] = announced_at(rows, t0, name)
    sample["alive_again_s"] = first_at(rows, t0, ("member-recover", "member-join"), name)
    return sample


def leader_takeover(system: System, group: bool = True) -> dict[str, Any]:
    """kill -9 of the leader (``group``: its process group; else its PID alone) until it is back."""
    old = leader_now(system)
    since = {s: last_seq(system, s) for s in system.live_supervisors()}
    inc = system.incarnation(old)
    t0 = time.time()
    system.kill(old, group=group)

    def successor() -> str | None:
        lead = system.leader()
        return lead[0] if lead is not None and lead[0] != old else None

    new = system.wait(successor, STEP_TIMEOUT, f"a new leader after {old}")
    system.wait(lambda: system.alive_everywhere(old, newer_than=inc), STEP_TIMEOUT, f"{old} back")
    rows = system.events(new, since[new])
    acquired = [
        r for r in rows if r["kind"] == "role-acquired" and r["payload"]["role"] == "leader" and r["received_at"] >= t0
    ]
    return {
        "kill": "group" if group else "pid",
        "old_leader": old,
        "new_leader": new,
        "detected_s": first_at(rows, t0, ("member-failed",), old),
        "takeover_s": round(acquired[0]["received_at"] - t0, 3) if acquired else None,
        "old_leader_back_s": first_at(rows, t0, ("member-recover", "member-join"), old),
    }


def heal(system: System, timeout: float = STEP_TIMEOUT) -> None:
    system.wait_healthy(timeout)
    time.sleep(1.0)  # let the restarted member's news settle everywhere


def measure(system: System, runs: int) -> dict[str, Any]:
    system.start()
    heal(system, START_TIMEOUT)
    workers = [n for n, m in system.members.items() if m.kind == "worker"]
    kills, hangs, takeovers, pid_takeovers = [], [], [], []
    for i in range(runs):
        kills.append(worker_restart(system, workers[i % len(workers)], hang=False))
        heal(system)
        hangs.append(worker_restart(system, workers[(i + 1) % len(workers)], hang=True))
        heal(system)
        takeovers.append(leader_takeover(system))
        heal(system)
        pid_takeovers.append(leader_takeover(system, group=False))
        heal(system)
        k, h, t, tp = kills[-1], hangs[-1], takeovers[-1], pid_takeovers[-1]
        print(
            f"run {i + 1:2}/{runs}: kill -9 worker -> alive again {k['alive_again_s']} s; "
            f"hang -> exit {h['exited_s']} s -> alive again {h['alive_again_s']} s; "
            f"kill -9 leader {t['old_leader']} -> {t['new_leader']} leads after {t['takeover_s']} s; "
            f"kill -9 leader's PID {tp['old_leader']} -> {tp['new_leader']} leads after {tp['takeover_s']} s",
            flush=True,
        )

    def col(samples: list[dict[str, Any]], key: str) -> dict[str, Any]:
        values = [s[key] for s in samples if s[key] is not None]
        out = summary(values) if values else {"n": 0}
        out["missing"] = len(samples) - len(values)
        return out

    return {
        "leader_takeover": {k: col(takeovers, k) for k in ("detected_s", "takeover_s", "old_leader_back_s")},
        "leader_takeover_pid": {k: col(pid_takeovers, k) for k in ("detected_s", "takeover_s", "old_leader_back_s")},
        "worker_kill": {k: col(kills, k) for k in ("detected_s", "restart_issued_s", "alive_again_s")},
        "worker_hang": {
            **{k: col(hangs, k) for k in ("exited_s", "detected_s", "restart_issued_s", "alive_again_s")},
            "watchdog_exits": sum(1 for h in hangs if h["watchdog_exit"]),
        },
        "samples": {
            "leader_takeover": takeovers,
            "leader_takeover_pid": pid_takeovers,
            "worker_kill": kills,
            "worker_hang": hangs,
        },
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--stations", type=int, default=3)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "supervised-workers.json")
    args = p.parse_args()
    started = time.time()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="supervised-workers-") as tmp, System(Path(tmp), args.stations) as system:
        results = measure(system, args.runs)
    doc = {
        "what": "examples/supervised-workers: seconds from kill -9 / hang to each outcome (see measure.py)",
        "command": f"python3 examples/supervised-workers/measure.py --runs {args.runs}",
        "runs": args.runs,
        "stations": args.stations,
        "profile": "local",
        "worker_watchdog_s": 1.0,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "duration_s": round(time.time() - started, 1),
        **results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    lt, wk, wh = doc["leader_takeover"], doc["worker_kill"], doc["worker_hang"]
    print(f"\nover {args.runs} runs (median / max, seconds):")
    print(f"  leader takeover after kill -9:      {lt['takeover_s']['median']} / {lt['takeover_s']['max']}")
    ltp = doc["leader_takeover_pid"]["takeover_s"]
    print(f"  ... of the leader's PID alone:      {ltp.get('median')} / {ltp.get('max')}")
    print(f"  worker alive again after kill -9:   {wk['alive_again_s']['median']} / {wk['alive_again_s']['max']}")
    print(f"  hung worker exits (watchdog):       {wh['exited_s']['median']} / {wh['exited_s']['max']}")
    print(f"  hung worker alive again:            {wh['alive_again_s']['median']} / {wh['alive_again_s']['max']}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
