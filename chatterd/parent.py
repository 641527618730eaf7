"""``--exit-with-parent``: a sidecar chatterd that leaves when the process that started it dies.

An application that starts its own chatterd (a sidecar) binds its roles to its life this way:
once the application is gone, chatterd leaves gracefully (the others see "left" and elect
another holder at once) and exits. Two mechanisms, because neither is enough alone:

- ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` (Linux): the kernel sends SIGTERM, which already makes
  chatterd leave, the moment the parent exits. But it fires when the parent *thread* that
  forked us exits (a thread of a multi-threaded parent), and a parent that died before the
  prctl ran never triggers it.
- a poll of ``os.getppid()`` every POLL_INTERVAL seconds, against the parent's pid read when
  chatterd started (chatterd.cli): an orphan is adopted by init or a subreaper, so the pid
  changes. This also covers the systems without prctl.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable

import structlog
import trio

from chatterd.app import set_parent_death_signal

log = structlog.get_logger("chatterd.parent")

POLL_INTERVAL = 0.5


class ParentWatch:
    """Calls ``on_gone`` once when the process that was our parent at start is no longer."""

    def __init__(
        self,
        parent_pid: int,
        on_gone: Callable[[], Awaitable[None]],
        getppid: Callable[[], int] = os.getppid,
        interval: float = POLL_INTERVAL,
    ) -> None:
        self.parent_pid = parent_pid
        self.on_gone = on_gone
        self.getppid = getppid
        self.interval = interval

    def gone(self) -> bool:
        return self.getppid() != self.parent_pid

    async def run(self, *, set_pdeathsig: bool = True) -> None:
        """Arm PDEATHSIG (our SIGTERM handler leaves), then poll the parent as a backup."""
        armed = set_pdeathsig and set_parent_death_signal(signal.SIGTERM)
        log.info("watching_parent", parent_pid=self.parent_pid, pdeathsig=armed)
        while not self.gone():
            await trio.sleep(self.interval)
        log.warning("parent_gone", parent_pid=self.parent_pid, ppid_now=self.getppid())
        await self.on_gone()
