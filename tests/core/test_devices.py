import itertools
import random

from chatterd.core.devices import DeviceTable

ORIGIN = "541b10e7-d13a-45e8-8567-7d450ce86603"


def added(desc: str) -> dict:
    return {"DeviceAdded": {"origin": ORIGIN, "name": "gw", "description": desc}}


def status(load: str) -> dict:
    return {"DeviceStatus": {"origin": ORIGIN, "name": "gw", "metrics": {"load": {"Text": load}}}}


REMOVED = {"DeviceRemoved": {"origin": ORIGIN, "name": "gw"}}


def view(t: DeviceTable) -> list[tuple]:
    return [(r.origin, r.name, r.description, r.metrics) for r in t.present()]


def test_add_status_remove() -> None:
    t = DeviceTable()
    assert t.apply(added("router"), (1, "a"), 0)
    assert t.apply(status("0.3"), (2, "b"), 0)
    assert view(t) == [(ORIGIN, "gw", "router", {"load": {"Text": "0.3"}})]
    assert t.apply(REMOVED, (3, "c"), 0)
    assert view(t) == []


def test_late_gossip_never_rolls_back() -> None:
    t = DeviceTable()
    t.apply(added("new"), (5, "x"), 0)
    assert not t.apply(added("old"), (4, "y"), 0)
    assert view(t)[0][2] == "new"
    t.apply(REMOVED, (6, "z"), 0)
    assert not t.apply(added("older"), (3, "w"), 0)  # a late add cannot revive it
    assert view(t) == []
    t.apply(added("back"), (7, "v"), 0)  # a newer add does
    assert view(t)[0][2] == "back"


def test_any_order_any_duplicates_same_table() -> None:
    updates = [
        (added("a"), (1, "1")),
        (status("0.1"), (2, "2")),
        (added("b"), (3, "3")),
        (REMOVED, (4, "4")),
        (added("c"), (5, "5")),
        (status("0.9"), (6, "6")),
    ]
    want = None
    rng = random.Random(7)
    for perm in itertools.islice(itertools.permutations(updates), 0, 720, 7):
        t = DeviceTable()
        seq = list(perm) + rng.sample(list(perm), 3)  # with duplicates
        for u, v in seq:
            t.apply(u, v, 0)
        got = view(t)
        want = want or got
        assert got == want == [(ORIGIN, "gw", "c", {"load": {"Text": "0.9"}})]


def test_merge_from_anti_entropy_and_tombstone_expiry() -> None:
    a, b = DeviceTable(), DeviceTable()
    a.apply(added("x"), (1, "1"), 0)
    a.apply(REMOVED, (2, "2"), 0)
    for rec in a.records():
        b.merge(rec, 0)
    assert view(b) == [] and len(b.records()) == 1
    b.expire(now=599, ttl=600)
    assert len(b.records()) == 1
    b.expire(now=600, ttl=600)
    assert b.records() == []
