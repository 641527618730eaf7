import random

from chatterd.core.devices import DeviceTable
from chatterd.core.digest import BUCKETS, Digest
from chatterd.core.membership import MemberTable

A = ("127.0.0.1", 1)


def build(order: list[int]) -> MemberTable:
    t = MemberTable()
    for i in order:
        t.apply_alive(f"n{i}", f"id{i}", A, 1, 0)
    return t


def test_same_state_same_digest_whatever_the_order() -> None:
    order = list(range(200))
    a = build(order)
    random.Random(3).shuffle(order)
    b = build(order)
    assert a.digest.hashes == b.digest.hashes
    assert a.digest.differing(b.digest.hashes) == []


def test_a_change_shows_in_exactly_its_bucket_and_undoing_it_restores() -> None:
    a, b = build(list(range(50))), build(list(range(50)))
    b.apply_suspect("n7", 1, 1)
    diff = a.digest.differing(b.digest.hashes)
    assert diff == [b.get("n7").bucket]  # type: ignore[union-attr]
    a.apply_suspect("n7", 1, 1)
    assert a.digest.differing(b.digest.hashes) == []
    b.apply_dead("n3", 1, 2)
    b.reap(now=10, after=1)
    a.apply_dead("n3", 1, 2)
    assert a.digest.differing(b.digest.hashes) == [a.get("n3").bucket]  # type: ignore[union-attr]
    a.reap(now=10, after=1)
    assert a.digest.differing(b.digest.hashes) == []


def test_devices_share_the_digest() -> None:
    d = Digest()
    t = DeviceTable(d)
    empty = list(d.hashes)
    origin = "541b10e7-d13a-45e8-8567-7d450ce86603"
    t.apply({"DeviceAdded": {"origin": origin, "name": "gw", "description": "x"}}, (1, "a"), 0)
    assert len(Digest().differing(d.hashes)) == 1
    t.apply({"DeviceRemoved": {"origin": origin, "name": "gw"}}, (2, "b"), 0)
    t.expire(now=1000, ttl=1)
    assert d.hashes == empty
    assert len(d.hashes) == BUCKETS
