"""The node's log lines for ``chatterd monitor`` (GET /v1/monitor, chatterd.opsapi), at a level
of the monitor's choosing, whatever the node's own.

Two pieces, installed by chatterd.logs.setup:

* :class:`GatedBoundLogger`, structlog's bound logger for our loggers: a call below the gate's
  threshold returns at once, like structlog's filtering logger, but the threshold moves: it is
  the node's own lowest level, or lower while a monitor asks for more (``debug`` while the node
  logs at ``info``). With no monitor, a debug call costs a comparison, never a rendering.
* :data:`TAP`, the first processor: while monitors are subscribed, every event at a level one of
  them wants is encoded once (JSON, with timestamp, level and logger) and offered to each of
  those. The node's own output is filtered after it, as before.

Each monitor has a buffer of MONITOR_BUFFER lines; a line that finds it full is dropped and
counted, and the reader's next batch starts with a ``monitor_dropped`` line saying how many.
Lines may come from worker threads (the state file's writer): the buffer takes a lock, and
the reader is woken through the trio token (``run_sync_soon``, thread-safe), at most one
wake-up pending at a time. At most MAX_MONITORS monitors at once.
"""

from __future__ import annotations

import contextlib
import datetime
import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

import msgspec
import structlog
import trio

LEVELS = {"trace": 5, "debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40}
LEVEL_NAMES = ("trace", "debug", "info", "warn", "error")
METHOD_LEVEL = {
    "trace": 5,
    "debug": 10,
    "info": 20,
    "msg": 20,
    "warn": 30,
    "warning": 30,
    "error": 40,
    "exception": 40,
    "critical": 50,
    "fatal": 50,
}
MAX_MONITORS = 8
MONITOR_BUFFER = 1000  # lines waiting for one monitor's reader
OFF = 10**6

_json = msgspec.json.Encoder(enc_hook=str)


class _Gate:
    """The lowest level a log call goes through at: the node's own, or a monitor's."""

    __slots__ = ("monitored", "node", "threshold")

    def __init__(self) -> None:
        self.node = 0  # the node's own lowest level (chatterd.logs.setup sets it)
        self.monitored = OFF  # the lowest level a monitor asks for
        self.threshold = 0

    def update(self) -> None:
        self.threshold = min(self.node, self.monitored)


GATE = _Gate()


def _gated(name: str, level: int) -> Any:
    target = "error" if name == "exception" else name

    def meth(self: structlog.BoundLoggerBase, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if level < GATE.threshold:
            return None
        if args:
            event = str(event) % args
        if name == "exception":
            kw.setdefault("exc_info", True)
        return self._proxy_to_logger(target, event, **kw)

    meth.__name__ = name
    return meth


class GatedBoundLogger(structlog.BoundLoggerBase):
    """A bound logger whose level methods check the moving threshold (:data:`GATE`)."""

    def log(self, level: int, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if level < GATE.threshold:
            return None
        name = next((n for n, lv in METHOD_LEVEL.items() if lv >= level), "critical")
        return getattr(self, name)(event, *args, **kw)

    def is_enabled_for(self, level: int) -> bool:
        return level >= GATE.threshold

    def get_effective_level(self) -> int:
        return GATE.threshold


for _name, _level in METHOD_LEVEL.items():
    setattr(GatedBoundLogger, _name, _gated(_name, _level))


class Subscriber:
    """One monitor: the lines it still has to read, and how many it lost."""

    def __init__(self, level: int, token: trio.lowlevel.TrioToken) -> None:
        self.level = level
        self._token = token
        self._lock = threading.Lock()
        self._lines: deque[bytes] = deque()
        self.dropped = 0
        self._event = trio.Event()
        self._wake_pending = False

    def offer(self, line: bytes) -> None:
        """From any thread: keep the line, or count it dropped; wake the reader."""
        with self._lock:
            if len(self._lines) >= MONITOR_BUFFER:
                self.dropped += 1
            else:
                self._lines.append(line)
            if self._wake_pending:
                return
            self._wake_pending = True
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._wake)

    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        self._event.set()

    async def wait(self) -> None:
        """Until there is something to take."""
        if not self._lines and not self.dropped:
            await self._event.wait()

    def take(self) -> list[bytes]:
        with self._lock:
            lines = list(self._lines)
            self._lines.clear()
            if self.dropped:
                dropped = {"event": "monitor_dropped", "dropped": self.dropped}
                lines.insert(0, _encode(_line("warning", "chatterd.monitor", dropped)))
                self.dropped = 0
            self._event = trio.Event()
        return lines


def _line(level: str, logger: str, event: dict[str, Any]) -> dict[str, Any]:
    stamp = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
    return {"timestamp": stamp, "level": level, "logger": logger} | event


def _encode(row: dict[str, Any]) -> bytes:
    return _json.encode(row)


class LogTap:
    """The subscribed monitors, and the structlog processor that feeds them."""

    def __init__(self) -> None:
        self.subscribers: list[Subscriber] = []
        self.lines = 0  # offered to monitors, for the tests

    def full(self) -> bool:
        return len(self.subscribers) >= MAX_MONITORS

    @contextlib.contextmanager
    def subscribe(self, level: int, token: trio.lowlevel.TrioToken) -> Iterator[Subscriber]:
        sub = Subscriber(level, token)
        self.subscribers = [*self.subscribers, sub]  # replaced, never changed: other threads read it
        self._update()
        try:
            yield sub
        finally:
            self.subscribers = [s for s in self.subscribers if s is not sub]
            self._update()

    def _update(self) -> None:
        GATE.monitored = min((s.level for s in self.subscribers), default=OFF)
        GATE.update()

    def __call__(self, logger: object, method: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
        subs = self.subscribers
        if not subs:
            return event
        level = METHOD_LEVEL.get(method, 20)
        wanting = [s for s in subs if s.level <= level]
        if wanting:
            row = {k: v for k, v in event.items() if v is not None}
            if row.get("exc_info"):
                row = dict(structlog.processors.format_exc_info(logger, method, row))
            name = "warning" if method == "warn" else ("error" if method == "exception" else method)
            line = _encode(_line(name, str(getattr(logger, "name", "")), row))
            self.lines += 1
            for s in wanting:
                s.offer(line)
        return event


TAP = LogTap()
