"""Start and stop the failover-counter system (a receiver, "master" and "slave") as real
processes on 127.0.0.1; used by run.py, measure.py and tests/examples/test_failover_counter.py.

Each app runs in its own session (process group) with its chatterd child, so ``crash()``
(SIGKILL to the group) takes both down like a machine crash, ``kill_app()`` (SIGKILL to the
app's PID alone) is the app crashing under a living chatterd (which leaves on its own:
``--exit-with-parent``), and ``interrupt()`` (SIGINT to the app) is a Ctrl-C. Everything
started here is stopped by PID/PGID in ``stop_all()``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from sidecar import App, free_port  # noqa: E402

PRIORITY = {"master": 2, "slave": 1}


class System:
    def __init__(self, workdir: Path, echo: bool = False) -> None:
        self.workdir = workdir
        self.echo = echo
        self.lines: list[tuple[float, str, str]] = []  # (time, app, line)
        self._lock = threading.Lock()
        self.port = {name: free_port() for name in ("receiver", "master", "slave")}
        self.apps: dict[str, App] = {}
        self.counts_file = workdir / "counts.jsonl"

    def _out(self, app: str) -> Callable[[str], None]:
        def out(line: str) -> None:
            with self._lock:
                self.lines.append((time.time(), app, line))
            if self.echo:
                print(f"{app:>8} | {line}", flush=True)

        return out

    def start(self, name: str) -> App:
        join = ["--join", f"127.0.0.1:{self.port['receiver']}"]
        common = ["--port", str(self.port[name]), "--log", str(self.workdir / f"{name}.chatterd.log")]
        if name == "receiver":
            argv = [str(HERE / "receiver.py"), *common, "--record", str(self.counts_file)]
        else:
            argv = [str(HERE / "sender.py"), "--name", name, "--priority", str(PRIORITY[name]), *common, *join]
            argv += ["--record", str(self.workdir / f"{name}.jsonl")]
        app = App(name, argv, self._out(name))
        app.start()
        self.apps[name] = app
        return app

    def start_all(self) -> None:
        self.start("receiver")
        self.start("master")
        self.start("slave")

    def counts(self) -> list[dict[str, Any]]:
        if not self.counts_file.exists():
            return []
        return [json.loads(line) for line in self.counts_file.read_text().splitlines() if line.strip()]

    def wait_for(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for: {what}\n{self.recent_output()}")
            time.sleep(0.05)

    def recent_output(self, per_app: int = 6) -> str:
        """The last lines each app printed (with their exit status), to say why a wait failed."""
        with self._lock:
            lines = list(self.lines)
        out = []
        for name, app in self.apps.items():
            status = "running" if app.running() else f"exited {app.proc.returncode if app.proc else None}"
            mine = [line for _t, who, line in lines if who == name][-per_app:]
            out.append(f"--- {name} ({status}):\n" + "\n".join(mine))
        return "\n".join(out)

    def wait_counts(self, sender: str, k: int, timeout: float, after: float = 0.0) -> None:
        """Until the receiver got k counts from ``sender`` (received after time ``after``)."""

        def enough() -> bool:
            return sum(c["sender"] == sender and c["received_at"] > after for c in self.counts()) >= k

        self.wait_for(enough, timeout, f"{k} counts by {sender}")

    def stop_all(self) -> None:
        for app in self.apps.values():
            app.interrupt()
        for app in self.apps.values():
            app.stop()


@contextlib.contextmanager
def running_system(workdir: Path, echo: bool = False) -> Iterator[System]:
    system = System(workdir, echo)
    try:
        system.start_all()
        yield system
    finally:
        system.stop_all()


def summarize(counts: list[dict[str, Any]]) -> dict[str, Any]:
    """Gaps, duplicates and rejections over what the receiver accepted, recomputed from scratch."""
    accepted = [c["n"] for c in counts if c["status"] != "rejected"]
    seen: set[int] = set()
    dups = 0
    for n in accepted:
        dups += n in seen
        seen.add(n)
    gaps = (max(seen) - min(seen) + 1 - len(seen)) if seen else 0
    order_ok = all(b == a + 1 for a, b in itertools.pairwise(accepted))
    rejected = sum(c["status"] == "rejected" for c in counts)
    return {"received": len(counts), "duplicates": dups, "gaps": gaps, "in_order": order_ok, "rejected": rejected}


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


MODES = ("kill9", "pid", "ctrlc")


def failover_run(workdir: Path, mode: str, phase: float = 0.5, echo: bool = False) -> dict[str, Any]:
    """One failover of the master ("kill9": its process group SIGKILLed, app and chatterd;
    "pid": the app's PID alone SIGKILLed, its chatterd left running; "ctrlc": SIGINT),
    ``phase`` seconds after one of its counts reached the receiver. Returns the figures:

    * ``role_takeover_s``: the kill → the slave holds the role (its own clock, same machine);
    * ``takeover_s``: the kill → the receiver gets the slave's first count;
    * ``receiver_interval_s``: the receiver's time between the master's last count and the
      slave's first (1.0 s is an uninterrupted rhythm);
    * ``chatterd_exited_s``: the kill → no process of the master's group is left, reaped
      included (an orphaned chatterd is reaped by init, which adds its own delay; for "pid",
      its chatterd has left by itself; ``None`` if it was still there 20 s after the kill);
    * duplicates, gaps, in_order, rejected over everything the receiver got.
    """
    assert mode in MODES, mode
    with running_system(workdir, echo=echo) as system:
        system.wait_counts("master", 3, timeout=40)
        k = len(system.counts())
        system.wait_for(lambda: len(system.counts()) > k, timeout=10, what="the next count")
        time.sleep(phase)
        t_kill = time.time()
        master = system.apps["master"]
        if mode == "kill9":
            master.crash()
        elif mode == "pid":
            master.kill_app()
        else:
            master.interrupt()
        gone_at: float | None = None
        with contextlib.suppress(TimeoutError):
            system.wait_for(lambda: not master.group_alive(), timeout=20, what="the master's process group gone")
            gone_at = time.time()
        system.wait_counts("slave", 3, timeout=30, after=t_kill)
        assert master.proc is not None
        master.proc.wait(10)
    counts = system.counts()
    first = next(c for c in counts if c["sender"] == "slave" and c["received_at"] > t_kill)
    last_master = [c for c in counts if c["sender"] == "master" and c["received_at"] < first["received_at"]][-1]
    acquired = next(r for r in records(workdir / "slave.jsonl") if r.get("kind") == "acquired" and r["t"] > t_kill)
    return {
        "mode": mode,
        "phase_s": round(phase, 3),
        "role_takeover_s": round(acquired["t"] - t_kill, 3),
        "takeover_s": round(first["received_at"] - t_kill, 3),
        "receiver_interval_s": round(first["received_at"] - last_master["received_at"], 3),
        "last_master_count": last_master["n"],
        "first_slave_count": first["n"],
        "master_exit_status": system.apps["master"].proc.returncode if system.apps["master"].proc else None,
        "chatterd_exited_s": None if gone_at is None else round(gone_at - t_kill, 3),
        **summarize(counts),
    }
