"""Start, watch and stop the whole system on loopback (used by run.py, measure.py and the test).

    with System(Path("run"), stations=3) as system:
        system.start()
        system.wait_healthy()
        system.kill("w1")                      # kill -9 of its process group
        ...                                    # leaving the block stops everything, by PID

Station i is a supervisor ``s<i>`` and a worker ``w<i>``. Every member's start command (and,
with --detach, its restart command) is built here; the restart file the supervisors read
maps every member's name to its restart command. The first instances are children of this
process (so their exit status is known); restarted ones are started by the leader in their
own sessions and found through their pidfiles.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))  # this checkout's chatterd, as the members get (PYTHONPATH below)

import sw_members  # noqa: E402

from chatterd.testing import HOST, free_port  # noqa: E402

T = TypeVar("T")

# A supervisor whose loop stalls this long exits (status 70) and its role moves; a little more
# than a worker's limit, since a supervisor's false exit costs a leader handover.
SUPERVISOR_WATCHDOG = 2.0


@dataclass
class Member:
    name: str
    kind: str  # "supervisor" or "worker"
    port: int
    argv: list[str]
    pidfile: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None  # the first instance, started by System.start

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


class System:
    def __init__(self, run_dir: Path, stations: int = 3, worker_watchdog: float = 1.0) -> None:
        self.dir = run_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        self.env = {**os.environ, "PYTHONPATH": path}  # runs from a fresh clone, installed or not
        self.env.setdefault("CHATTER_LOG", "info")
        names = [f"s{i}" for i in range(1, stations + 1)] + [f"w{i}" for i in range(1, stations + 1)]
        ports = {n: free_port() for n in names}
        seeds = [f"{HOST}:{ports[n]}" for n in names if n.startswith("s")]
        restart_file = self.dir / "restart.json"
        self.members: dict[str, Member] = {}
        for n in names:
            kind = "supervisor" if n.startswith("s") else "worker"
            argv = [
                sys.executable,
                str(HERE / f"{kind}.py"),
                "--name", n,
                "--listen", f"{HOST}:{ports[n]}",
                *[a for s in seeds for a in ("--join", s)],
                "--data-dir", str(self.dir / n),
                "--pidfile", str(self.dir / f"{n}.pid"),
                "--log", str(self.dir / f"{n}.log"),
                "--watchdog", str(worker_watchdog if kind == "worker" else SUPERVISOR_WATCHDOG),
            ]  # fmt: skip
            if kind == "supervisor":
                argv += ["--restart-file", str(restart_file)]
            self.members[n] = Member(n, kind, ports[n], argv, self.dir / f"{n}.pid", self.dir / f"{n}.log")
        restart = {n: shlex.join([*m.argv, "--detach"]) for n, m in self.members.items()}
        restart_file.write_text(json.dumps({"restart": restart}, indent=2) + "\n")
        self.http = httpx.Client(timeout=2.0)

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        for name in self.members:
            self.start_member(name)

    def start_member(self, name: str) -> None:
        """Start one member (again: an operator's restart after a Ctrl-C, which no leader undoes)."""
        m = self.members[name]
        with open(m.log, "ab") as out:
            m.proc = subprocess.Popen(
                m.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=self.env, start_new_session=True
            )

    def __enter__(self) -> System:
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGKILL every member (supervisors first, each with its process group, so that no
        restart in flight starts anything more), by the PIDs this object started and those in
        the pidfiles; repeat until no member is left running."""
        order = sorted(self.members.values(), key=lambda m: m.kind != "supervisor")
        for _ in range(10):
            found = False
            for m in order:
                pids = {sw_members.read_pid(m.pidfile)}
                if m.proc is not None and m.proc.poll() is None:
                    pids.add(m.proc.pid)
                for pid in pids - {None}:
                    assert pid is not None
                    ours = m.proc is not None and pid == m.proc.pid and m.proc.poll() is None
                    if ours or (sw_members.pid_alive(pid) and sw_members.is_member_process(pid, m.name)):
                        found = True
                        self._kill_group(pid, signal.SIGKILL)
            for m in order:
                if m.proc is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        m.proc.wait(5)
            if not found:
                break
            time.sleep(0.3)  # a restart command killed mid-way may have started one more
        self.http.close()

    @staticmethod
    def _kill_group(pid: int, sig: int) -> None:
        """Signal the process group led by ``pid`` (every member leads its own session)."""
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    # ------------------------------------------------------------------ acting

    def pid(self, name: str) -> int | None:
        m = self.members[name]
        return sw_members.running_pid(m.pidfile, name)

    def kill(self, name: str, sig: int = signal.SIGKILL, group: bool = True) -> int:
        """Send ``sig`` to the member's running instance (SIGKILL: its whole process group,
        unless ``group`` is False: its PID alone, as a segfault or the OOM killer would)."""
        pid = self.pid(name)
        assert pid is not None, f"{name} is not running"
        if sig == signal.SIGKILL and group:
            self._kill_group(pid, sig)
        else:
            os.kill(pid, sig)
        return pid

    # ------------------------------------------------------------------ observing

    def get(self, name: str, path: str) -> Any | None:
        try:
            return self.http.get(self.members[name].url + path).json()
        except (httpx.HTTPError, ValueError):
            return None

    def supervisors(self) -> list[str]:
        return [n for n, m in self.members.items() if m.kind == "supervisor"]

    def live_supervisors(self) -> list[str]:
        return [n for n in self.supervisors() if self.pid(n) is not None]

    def view(self, observer: str) -> dict[str, dict[str, Any]]:
        """``observer``'s member table by name ({} if it does not answer)."""
        return {m["name"]: m for m in self.get(observer, "/v1/members") or []}

    def leader(self) -> tuple[str, int] | None:
        """(holder, epoch) of role leader as every live supervisor sees it, or None if they differ."""
        seen = set()
        for s in self.live_supervisors():
            rows = self.get(s, "/v1/roles") or []
            row = next((r for r in rows if r["role"] == "leader"), None)
            seen.add(None if row is None or row["holder"] is None else (row["holder"], row["epoch"]))
        if len(seen) == 1 and None not in seen:
            return next(iter(seen))
        return None

    def alive_everywhere(self, name: str, newer_than: int = -1) -> bool:
        """Every live supervisor sees ``name`` alive with an incarnation > newer_than."""
        sups = self.live_supervisors()
        for s in sups:
            row = self.view(s).get(name)
            if row is None or row["state"] != "alive" or row["incarnation"] <= newer_than:
                return False
        return bool(sups)

    def incarnation(self, name: str, observer: str | None = None) -> int:
        observer = observer or self.live_supervisors()[0]
        return int(self.view(observer)[name]["incarnation"])

    def healthy(self) -> bool:
        """Every member runs and every live supervisor sees all of them alive, and agrees on a leader."""
        if any(self.pid(n) is None for n in self.members):
            return False
        return all(self.alive_everywhere(n) for n in self.members) and self.leader() is not None

    def events(self, observer: str, since: int = 0) -> list[dict[str, Any]]:
        return self.get(observer, f"/v1/events?since={since}") or []

    def wait(self, what: Callable[[], T], timeout: float, description: str, interval: float = 0.05) -> T:
        """Poll ``what`` until it returns something true; TimeoutError with ``description`` otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            value = what()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"not within {timeout:g} s: {description}")
            time.sleep(interval)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        self.wait(self.healthy, timeout, "every member alive everywhere and one agreed leader", interval=0.1)

    def log_text(self, name: str) -> str:
        try:
            return self.members[name].log.read_text(errors="replace")
        except OSError:
            return ""
