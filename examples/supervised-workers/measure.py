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
  (restarted by the successor);
- kill -STOP of a worker's PID (issue #12: the process still exists, but nothing in it runs,
  not even its watchdog): the same times as a kill -9, and whether the stopped instance was
  gone (SIGKILLed by the restart command) when the new one was alive everywhere.

For every step, the leader's log gives when its restart command returned (command_done_s),
and its announcements of restarts of any other member are counted as false restarts.
``--steps stop`` (say) runs only some steps, in the order given.

Times are from the signal (wall clock, time.time()) to the event's ``received_at`` in the
observer's /v1/events (same host, same clock). Results: JSON to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
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


SIGNALS = {"kill": signal.SIGKILL, "hang": signal.SIGUSR1, "stop": signal.SIGSTOP}


def logged_at(system: System, observer: str, event: str, member: str | None, t0: float) -> float | None:
    """Seconds from t0 to the first ``event`` (about ``member``, if given) in ``observer``'s JSON log."""
    for line in system.log_text(observer).splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict) or row.get("event") != event or member not in (None, row.get("member")):
            continue
        at = datetime.fromisoformat(str(row.get("timestamp")).replace("Z", "+00:00")).timestamp()
        if at >= t0:
            return round(at - t0, 3)
    return None


def others_restarted(rows: list[dict[str, Any]], t0: float, name: str) -> list[str]:
    """Members other than ``name`` whose restart was announced after t0: false restarts."""
    out = []
    for row in rows:
        body = row["payload"].get("restart") if row["kind"] == "user" else None
        if body and body["name"] != name and row["received_at"] >= t0:
            out.append(body["name"])
    return out


def worker_restart(system: System, name: str, how: str) -> dict[str, Any]:
    """``how``: "kill" (kill -9 of its group), "hang" (SIGUSR1) or "stop" (SIGSTOP of its PID)."""
    leader = leader_now(system)
    since = last_seq(system, leader)
    inc = system.incarnation(name, leader)
    pid = system.pid(name)
    assert pid is not None
    watchdog_lines = system.log_text(name).count('"watchdog_exit"')
    t0 = time.time()
    if how == "kill":
        system.kill(name)
    else:
        os.kill(pid, SIGNALS[how])
    sample: dict[str, Any] = {"member": name, "leader": leader}
    if how == "hang":
        deadline = time.monotonic() + STEP_TIMEOUT
        while sw_members.pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        sample["exited_s"] = round(time.time() - t0, 3)
        sample["watchdog_exit"] = system.log_text(name).count('"watchdog_exit"') > watchdog_lines
    system.wait(lambda: system.alive_everywhere(name, newer_than=inc), STEP_TIMEOUT, f"{name} back")
    rows = system.events(leader, since)
    sample["detected_s"] = first_at(rows, t0, ("member-failed",), name)
    sample["restart_issued_s"] = announced_at(rows, t0, name)
    sample["command_done_s"] = logged_at(system, leader, "restarted", name, t0)  # --detach returned
    sample["new_started_s"] = logged_at(system, name, "started", None, t0)  # the new instance's node runs
    sample["alive_again_s"] = first_at(rows, t0, ("member-recover", "member-join"), name)
    sample["false_restarts"] = others_restarted(rows, t0, name)
    if how == "stop":
        sample["old_instance_gone"] = not sw_members.pid_alive(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # never leave a stopped process behind
    return sample


def leader_takeover(system: System, how: str = "group") -> dict[str, Any]:
    """Stop the leader until it is back: kill -9 of its process group (``how`` "group") or of
    its PID alone ("pid"), both restarted by the successor; or Ctrl-C ("ctrlc": SIGINT, a
    graceful leave, which no leader undoes: started again here, as an operator would)."""
    old = leader_now(system)
    since = {s: last_seq(system, s) for s in system.live_supervisors()}
    inc = system.incarnation(old)
    t0 = time.time()
    if how == "ctrlc":
        pid = system.kill(old, signal.SIGINT)
    else:
        system.kill(old, group=how == "group")

    def successor() -> str | None:
        lead = system.leader()
        return lead[0] if lead is not None and lead[0] != old else None

    new = system.wait(successor, STEP_TIMEOUT, f"a new leader after {old}")
    if how == "ctrlc":
        system.wait(lambda: not sw_members.pid_alive(pid), STEP_TIMEOUT, f"{old} to exit after Ctrl-C")
        system.start_member(old)
    system.wait(lambda: system.alive_everywhere(old, newer_than=inc), STEP_TIMEOUT, f"{old} back")
    rows = system.events(new, since[new])
    acquired = [
        r for r in rows if r["kind"] == "role-acquired" and r["payload"]["role"] == "leader" and r["received_at"] >= t0
    ]
    return {
        "kill": how,
        "old_leader": old,
        "new_leader": new,
        "detected_s": first_at(rows, t0, ("member-failed", "member-leave"), old),
        "takeover_s": round(acquired[0]["received_at"] - t0, 3) if acquired else None,
        "old_leader_back_s": first_at(rows, t0, ("member-recover", "member-join"), old),
        "false_restarts": others_restarted(rows, t0, old),
    }


def heal(system: System, timeout: float = STEP_TIMEOUT) -> None:
    system.wait_healthy(timeout)
    time.sleep(1.0)  # let the restarted member's news settle everywhere


# step name -> (key in the results, columns summarised)
RESTART = ("detected_s", "restart_issued_s", "command_done_s", "new_started_s", "alive_again_s")
STEPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "kill": ("worker_kill", RESTART),
    "hang": ("worker_hang", ("exited_s", *RESTART)),
    "takeover": ("leader_takeover", ("detected_s", "takeover_s", "old_leader_back_s")),
    "takeover-pid": ("leader_takeover_pid", ("detected_s", "takeover_s", "old_leader_back_s")),
    "takeover-ctrlc": ("leader_takeover_ctrlc", ("detected_s", "takeover_s", "old_leader_back_s")),
    "stop": ("worker_stop", RESTART),
}


def run_step(system: System, step: str, i: int) -> dict[str, Any]:
    workers = [n for n, m in system.members.items() if m.kind == "worker"]
    if step.startswith("takeover"):
        return leader_takeover(system, {"takeover": "group", "takeover-pid": "pid", "takeover-ctrlc": "ctrlc"}[step])
    offset = {"kill": 0, "hang": 1, "stop": 2}[step]
    return worker_restart(system, workers[(i + offset) % len(workers)], step)


def one_line(step: str, sample: dict[str, Any]) -> str:
    if step.startswith("takeover"):
        what = {
            "takeover": "kill -9 leader",
            "takeover-pid": "kill -9 leader's PID",
            "takeover-ctrlc": "Ctrl-C leader",
        }[step]
        return f"{what} {sample['old_leader']} -> {sample['new_leader']} leads after {sample['takeover_s']} s"
    what = {"kill": "kill -9", "hang": "hang", "stop": "kill -STOP"}[step]
    exited = f" -> exit {sample['exited_s']} s" if step == "hang" else ""
    return f"{what} {sample['member']}{exited} -> alive again {sample['alive_again_s']} s"


def column(samples: list[dict[str, Any]], key: str) -> dict[str, Any]:
    values = [s[key] for s in samples if s.get(key) is not None]
    out = summary(values) if values else {"n": 0}
    out["missing"] = len(samples) - len(values)
    return out


def measure(system: System, runs: int, steps: list[str]) -> dict[str, Any]:
    system.start()
    heal(system, START_TIMEOUT)
    samples: dict[str, list[dict[str, Any]]] = {step: [] for step in steps}
    for i in range(runs):
        for step in steps:
            samples[step].append(run_step(system, step, i))
            heal(system)
        print(f"run {i + 1:2}/{runs}: " + "; ".join(one_line(st, samples[st][-1]) for st in steps), flush=True)
    results: dict[str, Any] = {}
    for step in steps:
        key, columns = STEPS[step]
        results[key] = {c: column(samples[step], c) for c in columns}
        results[key]["false_restarts"] = sum(len(s["false_restarts"]) for s in samples[step])
    if "hang" in samples:
        results["worker_hang"]["watchdog_exits"] = sum(1 for h in samples["hang"] if h["watchdog_exit"])
    if "stop" in samples:
        results["worker_stop"]["old_instance_gone"] = sum(1 for h in samples["stop"] if h["old_instance_gone"])
    results["samples"] = {STEPS[step][0]: samples[step] for step in steps}
    return results


def print_summary(doc: dict[str, Any]) -> None:
    print(f"\nover {doc['runs']} runs (median / max, seconds):")
    labels = {
        ("leader_takeover", "takeover_s"): "leader takeover after kill -9",
        ("leader_takeover_pid", "takeover_s"): "... of the leader's PID alone",
        ("leader_takeover_ctrlc", "takeover_s"): "leader takeover after Ctrl-C",
        ("worker_kill", "alive_again_s"): "worker alive again after kill -9",
        ("worker_hang", "exited_s"): "hung worker exits (watchdog)",
        ("worker_hang", "alive_again_s"): "hung worker alive again",
        ("worker_stop", "alive_again_s"): "stopped worker alive again",
    }
    for (key, col), label in labels.items():
        if key in doc:
            print(f"  {label + ':':36} {doc[key][col].get('median')} / {doc[key][col].get('max')}")
    false = sum(doc[STEPS[step][0]]["false_restarts"] for step in doc["steps"])
    print(f"  false restarts (a member not hit):   {false}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--stations", type=int, default=3)
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, in order (default: {','.join(STEPS)})")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "supervised-workers.json")
    args = p.parse_args()
    steps = args.steps.split(",")
    if unknown := [s for s in steps if s not in STEPS]:
        p.error(f"unknown step(s) {unknown}; known: {', '.join(STEPS)}")
    started = time.time()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="supervised-workers-") as tmp, System(Path(tmp), args.stations) as system:
        results = measure(system, args.runs, steps)
    doc = {
        "what": "examples/supervised-workers: seconds from kill -9 / hang / kill -STOP to each outcome (measure.py)",
        "command": f"python3 examples/supervised-workers/measure.py --runs {args.runs} --steps {','.join(steps)}",
        "runs": args.runs,
        "steps": steps,
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
    print_summary(doc)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
