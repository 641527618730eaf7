"""GET /v1/events?since=SEQ: the rows newer than SEQ, oldest first, found from the newest end."""

from __future__ import annotations

from collections import deque
from typing import Any

from chatterd.eventlog import events_since


def _buffer(first: int, last: int, maxlen: int = 5) -> deque[dict[str, Any]]:
    buf: deque[dict[str, Any]] = deque(maxlen=maxlen)
    for seq in range(first, last + 1):
        buf.append({"seq": seq})
    return buf


def _seqs(rows: list[dict[str, Any]]) -> list[int]:
    return [r["seq"] for r in rows]


def test_since_returns_the_newer_rows_oldest_first() -> None:
    buf = _buffer(1, 12)  # the buffer holds 8..12: 1..7 were pushed out
    assert _seqs(events_since(buf, 0)) == [8, 9, 10, 11, 12]
    assert _seqs(events_since(buf, 5)) == [8, 9, 10, 11, 12]  # older than the buffer: all of it
    assert _seqs(events_since(buf, 9)) == [10, 11, 12]
    assert _seqs(events_since(buf, 11)) == [12]
    assert events_since(buf, 12) == []
    assert events_since(buf, 100) == []
    assert _seqs(events_since(buf, -3)) == [8, 9, 10, 11, 12]
    assert events_since(deque(), 0) == []


def test_since_does_not_need_contiguous_seqs() -> None:
    buf = deque({"seq": s} for s in (2, 3, 7, 20))
    assert _seqs(events_since(buf, 3)) == [7, 20]
    assert _seqs(events_since(buf, 6)) == [7, 20]
    assert _seqs(events_since(buf, 7)) == [20]
