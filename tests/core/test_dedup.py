from chatterd.core.dedup import SeenSet


def test_duplicates_are_filtered() -> None:
    s: SeenSet[None] = SeenSet(ttl=10, max_entries=100)
    assert s.add("a", 0.0)
    assert not s.add("a", 1.0)
    assert "a" in s


def test_entries_expire_after_ttl() -> None:
    s: SeenSet[None] = SeenSet(ttl=10, max_entries=100)
    s.add("a", 0.0)
    s.add("b", 5.0)
    s.add("c", 10.5)  # expires a
    assert "a" not in s and "b" in s
    assert len(s) == 2


def test_memory_is_bounded() -> None:
    s: SeenSet[None] = SeenSet(ttl=1e9, max_entries=1000)
    for i in range(10_000):
        s.add(str(i), float(i))
    assert len(s) == 1000
    assert s.evicted == 9000
    assert "9999" in s and "0" not in s


def test_values_are_kept() -> None:
    s: SeenSet[str] = SeenSet(ttl=10, max_entries=10)
    s.add("rid", 0.0, "msg-id")
    assert s.get("rid") == "msg-id"
    assert s.get("other") is None
