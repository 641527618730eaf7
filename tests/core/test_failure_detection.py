import math

from chatterd.core.queue import BroadcastQueue
from chatterd.core.ring import Ring
from chatterd.core.suspicion import Suspicion, timeout


def test_timeout_shrinks_with_confirmations() -> None:
    ts = [timeout(c, 3, 0.5, 4.0) for c in (1, 2, 3)]
    assert ts[0] == 4.0 and ts[2] == 0.5
    assert ts[0] > ts[1] > ts[2]
    assert timeout(1, 1, 0.5, 4.0) == 0.5  # a lone monitor is every monitor
    assert timeout(0, 3, 0.5, 4.0) == 4.0  # suspicion heard second-hand, no accuser yet


def test_suspicion_counts_independent_accusers_once() -> None:
    s = Suspicion(inc=1, start=10.0, expected=3, t_min=0.5, t_max=4.0)
    assert s.confirm("a") and not s.confirm("a") and not s.confirm(None)
    assert s.deadline == 14.0
    s.confirm("b")
    s.confirm("c")
    assert math.isclose(s.deadline, 10.5)
    s.delay(1.0)
    assert math.isclose(s.deadline, 11.5)


def test_ring_assigns_k_monitors_consistently() -> None:
    names = [f"n{i}" for i in range(20)]
    r1, r2 = Ring(), Ring()
    for n in names:
        r1.add(n)
    for n in reversed(names):
        r2.add(n)
    for n in names:
        mons = r1.successors(n, 3)
        assert mons == r2.successors(n, 3)  # same answer whatever the insertion order
        assert len(set(mons)) == 3 and n not in mons
        for m in mons:  # n is among the members each of its monitors watches
            assert n in r1.predecessors(m, 3)
    # every node is watched by exactly 3 and watches exactly 3
    watched = {n: 0 for n in names}
    for n in names:
        for m in r1.successors(n, 3):
            watched[m] += 1
    assert set(watched.values()) == {3}


def test_ring_small_and_changing() -> None:
    r = Ring()
    r.add("a")
    assert r.successors("a", 3) == []
    r.add("b")
    assert r.successors("a", 3) == ["b"] and r.predecessors("a", 3) == ["b"]
    assert r.remove("b") and not r.remove("b")
    assert r.successors("zz", 3) == []  # not a member


def test_queue_spends_each_message_budget_and_replaces_by_key() -> None:
    q = BroadcastQueue()
    q.add("m:x", b"old", 3)
    q.add("m:x", b"new", 3)  # newer news about x replaces the older
    q.add("r:1", b"r1", 2)
    sent = [q.take(1000) for _ in range(4)]
    assert sent[0] == [b"r1", b"new"] or sent[0] == [b"new", b"r1"]
    flat = [m for batch in sent for m in batch]
    assert flat.count(b"new") == 3 and flat.count(b"r1") == 2 and b"old" not in flat
    assert len(q) == 0


def test_queue_packs_least_sent_first_within_budget() -> None:
    q = BroadcastQueue()
    q.add("a", b"a" * 50, 5)
    q.take(100)
    q.add("b", b"b" * 50, 5)
    batch = q.take(60)  # room for one: the never-sent one goes first
    assert batch == [b"b" * 50]
