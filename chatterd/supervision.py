"""A node watching itself: the --check command and the event-loop watchdog.

``--check COMMAND`` runs COMMAND (through /bin/sh) every ``interval`` seconds. A non-zero
exit, a timeout or a failure to start means this node is failing: it says so in
/v1/health and withdraws its role candidacies (core: Node.set_failing), so the roles it holds
go to a healthy standby, like the Rust seed's heartbeat with status "fail". The first passing
run restores them.

``--watchdog SECONDS``: a thread outside the event loop checks that the loop has turned in
the last SECONDS. If not (a handler bug, a blocking call, a deadlock), it logs why and ends
the process with exit status 70 so that a supervisor (systemd, Docker, supervised-workers's
leader) restarts it: the apoptosis of the Docker seed. A stalled node must not linger as a
zombie that still holds its socket but answers nothing.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

import structlog
import trio

log = structlog.get_logger("chatterd.supervision")

WATCHDOG_EXIT = 70  # EX_SOFTWARE


class Check:
    """Runs the health-check command periodically; reports (failing reason | None)."""

    def __init__(self, command: str, interval: float, timeout: float, report: Callable[[str | None], None]) -> None:
        self.command = command
        self.interval = interval
        self.timeout = timeout
        self.report = report
        self.failing: str | None = None
        self.runs = 0
        self.failures = 0

    async def run_once(self) -> str | None:
        """Run the command once: None if it passed, else why it failed."""
        self.runs += 1
        try:
            with trio.move_on_after(self.timeout) as scope:
                proc = await trio.run_process(
                    ["/bin/sh", "-c", self.command],
                    check=False,
                    capture_stdout=True,
                    capture_stderr=True,
                    stdin=b"",
                )
        except OSError as e:
            return f"cannot run check: {e.strerror or e}"
        if scope.cancelled_caught:
            return f"check timed out after {self.timeout:g} s"
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            tail = f": {err[-1][:200]}" if err else ""
            return f"check exited with status {proc.returncode}{tail}"
        return None

    async def run(self) -> None:
        while True:
            reason = await self.run_once()
            if reason is not None:
                self.failures += 1
            if reason != self.failing:
                if reason is None:
                    log.info("check_passing", command=self.command)
                else:
                    log.warning("check_failing", command=self.command, reason=reason)
                self.failing = reason
                self.report(reason)
            await trio.sleep(self.interval)


class Watchdog:
    """Exits the process if the event loop does not call :meth:`pulse` for ``limit`` seconds."""

    def __init__(self, limit: float, exit: Callable[[int], None] = os._exit) -> None:
        self.limit = limit
        self._exit = exit
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="chatterd-watchdog", daemon=True)

    def pulse(self) -> None:
        self._last = time.monotonic()

    def start(self) -> None:
        self.pulse()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    async def beat(self) -> None:
        """A task that keeps pulsing while the loop turns (at a quarter of the limit)."""
        while True:
            self.pulse()
            await trio.sleep(self.limit / 4)

    def _watch(self) -> None:
        period = max(0.05, self.limit / 10)
        while not self._stop.wait(period):
            stalled = time.monotonic() - self._last
            if stalled > self.limit:
                # structlog may be what is stuck (a blocked stream): write the line ourselves.
                line = (
                    f'{{"event":"watchdog_exit","level":"critical","logger":"chatterd.supervision",'
                    f'"stalled_s":{stalled:.3f},"limit_s":{self.limit:g},"pid":{os.getpid()}}}\n'
                )
                try:
                    os.write(sys.stderr.fileno(), line.encode())
                except OSError:
                    pass
                self._exit(WATCHDOG_EXIT)
                return
