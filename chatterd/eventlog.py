"""The events a node saw, as rows: kept for ``GET /v1/events`` and pushed to live streams.

Each event of the core (a delivery, a membership change, a role change) becomes one row, a
JSON object numbered by ``seq`` (1, 2, ... in this process), and one log line on
``chatterd.events``. The newest ``maxlen`` rows are kept; :meth:`EventLog.rows` gives those
after a seq, :meth:`EventLog.subscribe` those after a seq and then every new one.

A subscriber (``GET /v1/events/stream``) gets its new rows through a bounded trio memory
channel that :meth:`EventLog.record` fills without waiting: the protocol loop never blocks on
a reader. A subscriber whose channel is full is dropped (its channel is closed after the rows
already in it, and ``stats["stream_dropped"]`` counts it); it reconnects with the last seq it
got and the buffer replays what it missed, as far as the buffer reaches.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Reversible
from typing import Any

import structlog
import trio

from chatterd.core.events import Delivery, Event, MemberEvent, RoleEvent

log_events = structlog.get_logger("chatterd.events")

Row = dict[str, Any]

# Rows a subscriber may have waiting before it counts as too slow and is dropped. A stream
# client reads them as fast as the network allows: more than this pile up only when it stalls.
SUBSCRIBER_BUFFER = 256


def events_since(events: Reversible[Row], since: int) -> list[Row]:
    """The rows of ``events`` (ordered by increasing ``seq``) with ``seq > since``, oldest first.

    Walks back from the newest row, so a poller that is up to date costs one comparison
    instead of a scan of the whole buffer.
    """
    newer: list[Row] = []
    for e in reversed(events):
        if e["seq"] <= since:
            break
        newer.append(e)
    newer.reverse()
    return newer


def row_of(ev: Event, seq: int, received_at: float) -> Row:
    """The row of one core event (what ``GET /v1/events`` and the event handlers show)."""
    if isinstance(ev, Delivery):
        return {
            "seq": seq,
            "id": ev.id,
            "kind": ev.kind,
            "origin": ev.origin,
            "payload": ev.payload,
            "received_at": received_at,
            "sent_at": ev.ts / 1000,
            "hops": ev.hops,
        }
    if isinstance(ev, RoleEvent):
        return {
            "seq": seq,
            "id": f"{ev.kind}:{ev.role}:{ev.epoch}",
            "kind": ev.kind,
            "origin": ev.holder,
            "payload": {"role": ev.role, "holder": ev.holder, "epoch": ev.epoch, "reason": ev.reason},
            "received_at": received_at,
        }
    assert isinstance(ev, MemberEvent)
    payload: dict[str, Any] = {
        "name": ev.node,
        "id": ev.id,
        "addr": ev.addr,
        "state": ev.state,
        "incarnation": ev.inc,
        "tags": ev.tags,
    }
    if ev.by is not None:
        payload["by"] = ev.by
    if ev.after_s is not None:
        payload["after_s"] = ev.after_s
    return {
        "seq": seq,
        "id": f"{ev.kind}:{ev.node}:{ev.inc}",
        "kind": ev.kind,
        "origin": ev.node,
        "payload": payload,
        "received_at": received_at,
    }


def log_event(ev: Event) -> None:
    """The log line of one event on ``chatterd.events``."""
    if isinstance(ev, Delivery):
        if ev.kind == "debug":
            log_events.info("debug_message", text=ev.payload["DebugMessage"]["text"], origin=ev.origin, id=ev.id)
        else:
            log_events.debug("delivered", kind=ev.kind, origin=ev.origin, id=ev.id)
    elif isinstance(ev, MemberEvent):
        level = "warning" if ev.kind == "member-failed" else "info"
        getattr(log_events, level)(
            ev.kind.replace("-", "_"), node=ev.node, addr=ev.addr, inc=ev.inc, by=ev.by, after_s=ev.after_s
        )


class Subscription:
    """One reader's view of the log: ``backlog`` (the buffered rows it asked for), then the
    new rows as they are recorded, through :attr:`receive` (closed when it was dropped).

    Use it as a context manager, or call :meth:`close`, so that the log forgets it.
    """

    def __init__(self, log: EventLog, backlog: list[Row], buffer: int) -> None:
        self._log = log
        self.backlog = backlog
        self._send, self.receive = trio.open_memory_channel[Row](buffer)
        self.dropped = False  # True once the log gave up on this reader (it fell behind)

    def offer(self, row: Row) -> bool:
        """Hand over a new row without waiting; False when this subscriber is gone or too slow."""
        try:
            self._send.send_nowait(row)
        except trio.WouldBlock:
            self.dropped = True
            self._send.close()  # the reader gets the rows already queued, then EndOfChannel
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def close(self) -> None:
        self._log.unsubscribe(self)
        self._send.close()
        self.receive.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Row:
        try:
            return await self.receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None


class EventLog:
    """The newest ``maxlen`` rows, numbered from 1, and the live subscribers."""

    def __init__(self, maxlen: int, subscriber_buffer: int = SUBSCRIBER_BUFFER) -> None:
        self.events: deque[Row] = deque(maxlen=maxlen)
        self.subscriber_buffer = subscriber_buffer
        self._seq = itertools.count(1)
        self.last_seq = 0  # the highest seq given so far (0: none yet)
        self._subscribers: set[Subscription] = set()
        self.stats = {"stream_dropped": 0}

    def __len__(self) -> int:
        return len(self.events)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def record(self, ev: Event) -> Row:
        """Number, log, keep and publish one event; its row."""
        seq = next(self._seq)
        self.last_seq = seq
        row = row_of(ev, seq, time.time())
        log_event(ev)
        self.events.append(row)
        for sub in list(self._subscribers):
            if not sub.offer(row):
                self._subscribers.discard(sub)
                if sub.dropped:
                    self.stats["stream_dropped"] += 1
                    log_events.info("stream_dropped", reason="too slow", queued=self.subscriber_buffer, seq=row["seq"])
        return row

    def rows(self, since: int = 0) -> list[Row]:
        """The buffered rows with ``seq > since``, oldest first."""
        return events_since(self.events, since)

    def subscribe(self, since: int | None = None, buffer: int | None = None) -> Subscription:
        """A new subscriber: the buffered rows after ``since`` (none when None) as its backlog,
        then every row recorded from now on, with nothing lost or repeated in between."""
        backlog = [] if since is None else self.rows(since)
        sub = Subscription(self, backlog, self.subscriber_buffer if buffer is None else buffer)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)
