"""chatterd.eventlog: rows of the core's events, the buffer, replay after a seq, and
subscribers that can fall behind without ever blocking the protocol loop."""

from __future__ import annotations

import pytest
import trio

from chatterd.core.events import Delivery, MemberEvent, RoleEvent
from chatterd.eventlog import EventLog, Row, row_of


def member(
    kind: str,
    node: str,
    inc: int = 1,
    by: str | None = None,
    after_s: float | None = None,
    tags: dict[str, str] | None = None,
) -> MemberEvent:
    return MemberEvent(
        kind=kind,
        node=node,
        id=f"id-{node}",
        addr="127.0.0.1:1",
        inc=inc,
        state="alive",
        by=by,
        after_s=after_s,
        tags=tags or {},
    )


def seqs(rows: list[Row]) -> list[int]:
    return [r["seq"] for r in rows]


def test_rows_of_each_kind() -> None:
    d = Delivery(id="m1", kind="user", origin="n1", ts=1500, hops=3, payload={"deploy": {"v": 1}})
    assert row_of(d, 7, 2.0) == {
        "seq": 7,
        "id": "m1",
        "kind": "user",
        "origin": "n1",
        "payload": {"deploy": {"v": 1}},
        "received_at": 2.0,
        "sent_at": 1.5,
        "hops": 3,
    }
    r = RoleEvent(kind="role-acquired", role="web", holder="n2", epoch=4, reason="elected")
    assert row_of(r, 8, 2.0) == {
        "seq": 8,
        "id": "role-acquired:web:4",
        "kind": "role-acquired",
        "origin": "n2",
        "payload": {"role": "web", "holder": "n2", "epoch": 4, "reason": "elected"},
        "received_at": 2.0,
    }
    failed = member("member-failed", "n3", inc=5, by="n1", after_s=2.5, tags={"a": "b"})
    row = row_of(failed, 9, 2.0)
    assert row["id"] == "member-failed:n3:5" and row["origin"] == "n3"
    assert row["payload"] == {
        "name": "n3",
        "id": "id-n3",
        "addr": "127.0.0.1:1",
        "state": "alive",
        "incarnation": 5,
        "tags": {"a": "b"},
        "by": "n1",
        "after_s": 2.5,
    }
    assert "by" not in row_of(member("member-join", "n4"), 10, 2.0)["payload"]  # only when known


def test_record_numbers_keeps_the_newest_and_replays_after_a_seq() -> None:
    log = EventLog(maxlen=5)
    assert log.rows() == [] and log.last_seq == 0
    rows = [log.record(member("member-join", f"n{i}")) for i in range(1, 13)]
    assert seqs(rows) == list(range(1, 13)) and log.last_seq == 12
    assert seqs(log.rows()) == [8, 9, 10, 11, 12] and len(log) == 5  # 1..7 pushed out
    assert seqs(log.rows(5)) == [8, 9, 10, 11, 12]
    assert seqs(log.rows(10)) == [11, 12]
    assert log.rows(12) == [] and log.rows(99) == []
    assert log.events[-1] is rows[-1]


async def test_subscriber_gets_the_backlog_then_every_new_row_once() -> None:
    log = EventLog(maxlen=10)
    for i in range(3):
        log.record(member("member-join", f"n{i}"))
    with log.subscribe(since=1) as sub:
        assert seqs(sub.backlog) == [2, 3]
        assert log.subscribers == 1
        log.record(member("member-update", "n0", inc=2))
        log.record(member("member-leave", "n1"))
        got = [await sub.receive.receive(), await sub.receive.receive()]
        assert seqs(got) == [4, 5]
        with trio.move_on_after(0.01) as idle:
            await sub.receive.receive()
        assert idle.cancelled_caught  # nothing else
    assert log.subscribers == 0
    log.record(member("member-join", "n9"))  # no one to hand it to: fine


async def test_subscribe_without_since_is_live_only() -> None:
    log = EventLog(maxlen=10)
    log.record(member("member-join", "n1"))
    with log.subscribe() as sub:
        assert sub.backlog == []
        log.record(member("member-join", "n2"))
        assert (await sub.receive.receive())["seq"] == 2


@pytest.mark.parametrize("buffer", [1, 4])
async def test_a_slow_subscriber_is_dropped_not_waited_for(buffer: int) -> None:
    log = EventLog(maxlen=100, subscriber_buffer=buffer)
    slow = log.subscribe()
    fast = log.subscribe()
    fast_rows: list[Row] = []
    for i in range(buffer + 3):  # the protocol loop records without awaiting anything
        log.record(member("member-join", f"n{i}"))
        fast_rows.append(await fast.receive.receive())
    assert seqs(fast_rows) == list(range(1, buffer + 4))
    assert slow.dropped and not fast.dropped
    assert log.subscribers == 1 and log.stats["stream_dropped"] == 1
    # The dropped one reads what it had queued, then the end; it can resume from the buffer.
    queued = [row async for row in slow]
    assert seqs(queued) == list(range(1, buffer + 1))
    assert seqs(log.rows(queued[-1]["seq"]))[0] == buffer + 1
    slow.close()
    fast.close()
    assert log.subscribers == 0


async def test_a_closed_subscriber_is_forgotten() -> None:
    log = EventLog(maxlen=10, subscriber_buffer=2)
    sub = log.subscribe()
    sub.receive.close()  # the reader went away without unsubscribing
    log.record(member("member-join", "n1"))
    assert log.subscribers == 0 and log.stats["stream_dropped"] == 0
