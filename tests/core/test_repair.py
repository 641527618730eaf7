"""RepairStore: numbered streams, gaps, and what a peer's summary lacks."""

from __future__ import annotations

import pytest

from chatterd.core import wire
from chatterd.core.repair import MAX_GAPS, RepairStore

K = ("n1", 1000)


def store() -> RepairStore:
    return RepairStore(window=30.0, grace=0.5)


def test_gaps_are_noticed_and_filled() -> None:
    s = store()
    s.record(K, 1, 5000, "r1", now=0.0)
    s.record(K, 4, 5000, "r4", now=0.1)
    assert set(s.streams[K].gaps) == {2, 3}
    assert s.record(K, 3, 5000, "r3", now=0.2) is True  # filled a gap
    assert s.record(K, 5, 5000, "r5", now=0.3) is False
    st = s.streams[K]
    assert (st.low, st.high, set(st.gaps)) == (1, 5, {2})


def test_an_older_rumor_lowers_the_low_mark_and_notes_what_lies_between() -> None:
    s = store()
    s.record(K, 5, 5000, "r5", now=0.0)
    s.record(K, 2, 5000, "r2", now=0.1)
    st = s.streams[K]
    assert (st.low, st.high, set(st.gaps)) == (2, 5, {3, 4})


def test_summary_lists_only_ripe_gaps() -> None:
    s = store()
    s.record(K, 1, 5000, "r1", now=0.0)
    s.record(K, 3, 5000, "r3", now=1.0)  # gap 2 noticed at 1.0
    entries, complete = s.summary(now=1.2, budget=1000)
    assert complete and entries == [["n1", 1000, 1, 3, []]]
    entries, _ = s.summary(now=1.6, budget=1000)
    assert entries == [["n1", 1000, 1, 3, [2]]]


def test_summary_respects_its_budget_and_says_it_is_partial() -> None:
    s = store()
    for i in range(50):
        s.record((f"node-{i}", 1), 1, 5000, i, now=float(i))
    s.record(("node-7", 1), 3, 5000, "gap", now=59.0)  # seq 2 missing
    entries, complete = s.summary(now=60.0, budget=500)
    assert not complete and 0 < len(entries) < 50
    assert len(wire.encode_message(wire.Have(s=entries, since=0))) <= 500 + 60  # type: ignore[arg-type]
    assert entries[0][:2] == ["node-7", 1] and entries[0][4] == [2]  # streams with gaps first
    listed: set[str] = set()
    for t in range(20):  # the others take turns
        listed |= {e[0] for e in s.summary(now=60.0 + t, budget=500)[0]}
    assert len(listed) == 50


def test_answer_sends_gaps_and_tail_but_not_what_is_still_in_flight() -> None:
    s = store()
    for q in range(1, 6):
        s.record(K, q, 5000, f"r{q}", now=float(q))
    peer = [["n1", 1000, 1, 3, [2]]]  # has 1 and 3, misses 2, has not seen 4 and 5
    assert s.answer(peer, True, 0, now=5.2, limit=100) == ["r2", "r4"]  # r5 is 0.2 s old: in flight
    assert s.answer(peer, True, 0, now=6.0, limit=100) == ["r2", "r4", "r5"]
    assert s.answer(peer, True, 0, now=6.0, limit=2) == ["r2", "r4"]


def test_answer_for_unknown_streams_only_if_the_summary_is_complete_and_since_join() -> None:
    s = store()
    s.record(K, 1, 4000, "old", now=0.0)
    s.record(K, 2, 6000, "new", now=0.0)
    assert s.answer([], True, 5000, now=1.0, limit=100) == ["new"]
    assert s.answer([], False, 0, now=1.0, limit=100) == []  # partial summary: it may know it


def test_behind() -> None:
    s = store()
    s.record(K, 1, 5000, "r1", now=0.0)
    s.record(K, 3, 5000, "r3", now=0.0)
    assert not s.behind([["n1", 1000, 1, 3, [2]]])  # same knowledge
    assert s.behind([["n1", 1000, 1, 3, []]])  # the peer has 2
    assert s.behind([["n1", 1000, 1, 4, [2]]])  # the peer has 4
    assert s.behind([["n9", 1, 1, 1, []]])  # a stream we never saw


def test_expiry_empties_the_store_and_bounds_gaps() -> None:
    s = store()
    s.record(K, 1, 5000, "r1", now=0.0)
    s.record(K, 1 + 5 * MAX_GAPS, 5000, "rN", now=0.0)
    assert len(s.streams[K].gaps) == MAX_GAPS
    assert s.given_up == 4 * MAX_GAPS - 1
    s.expire(now=31.0)
    assert not s.streams and len(s) == 0


def test_have_wire_round_trip_and_limits() -> None:
    have = wire.Have(s=[("n1", 1000, 1, 9, [2, 3])], since=123, all=False)
    dg = wire.decode(wire.encode([have], "n2"))
    assert dg.m[0] == have
    too_many = wire.Have(s=[("n1", 1, 1, 2, list(range(wire.MAX_HAVE_GAPS + 1)))], since=0)
    with pytest.raises(wire.WireError):
        wire.decode(wire.encode([too_many], "n2"))
