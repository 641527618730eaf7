import pytest

from chatterd.core import membership
from chatterd.core.membership import MemberTable

A = ("127.0.0.1", 1)


def table() -> MemberTable:
    t = MemberTable()
    t.apply_alive("x", "id1", A, 5, now=0)
    return t


def test_new_member_joins() -> None:
    t = MemberTable()
    tr = t.apply_alive("x", "id1", A, 1, now=0)
    assert tr is not None and tr.old is None and tr.new == "alive"


@pytest.mark.parametrize(
    ("inc", "changes"),
    [(4, False), (5, True), (6, True)],
)
def test_suspect_needs_at_least_the_current_incarnation(inc: int, changes: bool) -> None:
    t = table()
    assert (t.apply_suspect("x", inc, 1) is not None) == changes


def test_alive_refutes_suspect_only_with_a_higher_incarnation() -> None:
    t = table()
    t.apply_suspect("x", 5, 1)
    assert t.apply_alive("x", "id1", A, 5, 2) is None
    tr = t.apply_alive("x", "id1", A, 6, 2)
    assert tr is not None and (tr.old, tr.new) == ("suspect", "alive")


def test_dead_overrides_alive_and_suspect_at_same_incarnation() -> None:
    t = table()
    assert t.apply_dead("x", 4, 1) is None  # stale
    tr = t.apply_dead("x", 5, 1)
    assert tr is not None and (tr.old, tr.new) == ("alive", "dead")
    assert t.apply_dead("x", 5, 2) is None  # already dead: old news
    assert t.apply_suspect("x", 9, 2) is None  # a dead member is not suspected
    tr = t.apply_alive("x", "id2", A, 6, 3)  # restart
    assert tr is not None and (tr.old, tr.new) == ("dead", "alive")


def test_left_overrides_dead_but_not_newer_alive() -> None:
    t = table()
    t.apply_dead("x", 5, 1)
    tr = t.apply_left("x", 5, 2)
    assert tr is not None and (tr.old, tr.new) == ("dead", "left")
    assert t.apply_left("x", 5, 2) is None
    t.apply_alive("x", "id1", A, 7, 3)
    assert t.apply_left("x", 6, 4) is None


def test_address_change_is_an_update() -> None:
    t = table()
    tr = t.apply_alive("x", "id1", ("127.0.0.1", 2), 6, 1)
    assert tr is not None and tr.updated and (tr.old, tr.new) == ("alive", "alive")
    tr = t.apply_alive("x", "id1", ("127.0.0.1", 2), 7, 1)  # newer incarnation: news, not an update
    assert tr is not None and not tr.updated and (tr.old, tr.new) == ("alive", "alive")
    assert t.apply_alive("x", "id1", ("127.0.0.1", 2), 7, 1) is None  # old news


def test_reap_forgets_long_dead_members() -> None:
    t = table()
    t.apply_alive("y", "id", A, 1, 0)
    t.apply_dead("x", 5, 10)
    assert t.reap(now=100, after=100) == []
    assert t.reap(now=110, after=100) == ["x"]
    assert t.get("x") is None and t.get("y") is not None


def test_a_reaped_member_is_remembered_for_one_more_reap_after_at_its_incarnation() -> None:
    t = table()
    t.apply_dead("x", 5, 10)
    assert t.reap(now=110, after=100) == ["x"]
    assert t.forgot("x", 5) and t.forgot("x", 4)  # its history, as a peer still holds it
    assert not t.forgot("x", 6)  # a later life is news
    assert not t.forgot("y", 1)
    t.reap(now=209, after=100)
    assert t.forgot("x", 5)
    t.reap(now=210, after=100)  # one more reap_after: forgotten that it was forgotten
    assert not t.forgot("x", 5) and t.forgotten == {}


def test_the_reaped_names_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(membership, "FORGOTTEN_MAX", 3)
    t = MemberTable()
    for i in range(5):
        t.apply_alive(f"m{i}", "id", ("127.0.0.1", 10 + i), 1, now=0)
        t.apply_dead(f"m{i}", 1, now=i)
        t.reap(now=100 + i, after=100)
    assert list(t.forgotten) == ["m2", "m3", "m4"]  # the oldest go first
