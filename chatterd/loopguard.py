"""What the protocol loop does when a step of it raises: count, log with a rate limit, back
off, and give up with a clear exit status rather than spin.

A bug that makes ``Node.handle_timers`` raise leaves the core's next deadline in the past:
a loop that only logged and went round again would turn tens of thousands of times a second,
each turn writing a traceback. :class:`LoopGuard` turns that into at most one traceback per
``log_interval``, a pause growing from ``backoff_min`` to ``backoff_max`` between tries, and
after ``fatal`` failures in a row a :class:`LoopFailed` that ends the node (exit status
``LOOP_FAILURE_EXIT``), so a supervisor restarts it. Defaults: chatterd/core/config.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chatterd.core.config import (
    LOOP_BACKOFF_MAX,
    LOOP_BACKOFF_MIN,
    LOOP_ERROR_LOG_INTERVAL,
    LOOP_FAILURES_FATAL,
)


class LoopFailed(RuntimeError):
    """A step of the protocol loop failed ``fatal`` times in a row."""


class LoopGuard:
    def __init__(
        self,
        log: Any,
        event: str,
        clock: Callable[[], float],
        *,
        log_interval: float = LOOP_ERROR_LOG_INTERVAL,
        backoff_min: float = LOOP_BACKOFF_MIN,
        backoff_max: float = LOOP_BACKOFF_MAX,
        fatal: int | None = LOOP_FAILURES_FATAL,
    ) -> None:
        self.log = log
        self.event = event
        self.clock = clock
        self.log_interval = log_interval
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.fatal = fatal
        self.failures = 0  # since start
        self.in_a_row = 0
        self._logged_at: float | None = None
        self._unlogged = 0

    def ok(self) -> None:
        """The step succeeded: the next failure starts a new run."""
        self.in_a_row = 0

    def failed(self, **keys: Any) -> float:
        """Call from an ``except`` block. Returns how long to pause before the next try;
        raises LoopFailed once the step has failed ``fatal`` times in a row."""
        self.failures += 1
        self.in_a_row += 1
        now = self.clock()
        if self._logged_at is None or now - self._logged_at >= self.log_interval:
            self.log.exception(self.event, in_a_row=self.in_a_row, not_logged=self._unlogged, **keys)
            self._logged_at, self._unlogged = now, 0
        else:
            self._unlogged += 1
        if self.fatal is not None and self.in_a_row >= self.fatal:
            raise LoopFailed(f"{self.event}: {self.in_a_row} failures in a row")
        return min(self.backoff_max, self.backoff_min * 2 ** (self.in_a_row - 1))
