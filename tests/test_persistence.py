"""The saved identity (--data-dir): round trip, atomic replacement, and every way a file can
be unusable (reported as SnapshotError, for one log line and a fresh start)."""

import json
import random
from pathlib import Path

import pytest

from chatterd import persistence
from chatterd.persistence import Snapshot, SnapshotError

SNAP = Snapshot(
    name="n1",
    id="0b7a4e5c-1d2e-4f00-8a3b-5c6d7e8f9a0b",
    incarnation=17,
    peers=["10.0.0.2:2428", "h:1"],
    tags={"role": "db"},
)


def test_round_trip_and_missing(tmp_path: Path) -> None:
    assert persistence.load(tmp_path) is None  # nothing saved yet
    persistence.save(tmp_path / "new" / "dir", SNAP)  # created as needed
    assert persistence.load(tmp_path / "new" / "dir") == SNAP
    on_disk = json.loads((tmp_path / "new" / "dir" / "node.json").read_text())
    assert on_disk == {
        "name": "n1",
        "id": SNAP.id,
        "incarnation": 17,
        "peers": ["10.0.0.2:2428", "h:1"],
        "tags": {"role": "db"},
        "left": False,  # True after a graceful leave (see test_rejoin_seeds...)
    }
    # Files from before tags were saved (or with none) load with no tags.
    (tmp_path / "node.json").write_text('{"name": "n1", "id": "x", "incarnation": 3, "peers": []}')
    assert persistence.load(tmp_path) == Snapshot(name="n1", id="x", incarnation=3)


def test_save_replaces_atomically_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    persistence.save(tmp_path, SNAP)
    newer = Snapshot(name="n1", id=SNAP.id, incarnation=18, peers=[])
    persistence.save(tmp_path, newer)
    assert persistence.load(tmp_path) == newer
    assert [p.name for p in tmp_path.iterdir()] == ["node.json"]


def test_failed_save_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    persistence.save(tmp_path, SNAP)

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(persistence.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        persistence.save(tmp_path, Snapshot(name="n1", id=SNAP.id, incarnation=99))
    monkeypatch.undo()
    assert persistence.load(tmp_path) == SNAP
    assert [p.name for p in tmp_path.iterdir()] == ["node.json"]  # the temporary file is gone


@pytest.mark.parametrize(
    ("content", "mentions"),
    [
        (b"", "corrupt"),
        (b"\x00\xff garbage", "corrupt"),
        (b'{"name": "n1", "id": "x", "incarnation": 1, "peers": [', "corrupt"),  # truncated
        (b"[]", "corrupt"),
        (b'{"name": "n1", "id": "x"}', "incarnation"),
        (b'{"name": "n1", "id": "x", "incarnation": "7"}', "incarnation"),
        (b'{"name": "n1", "id": "x", "incarnation": -1}', ">= 0"),
        (b'{"name": "", "id": "x", "incarnation": 1}', "empty"),
        (b'{"name": "n1", "id": "x", "incarnation": 1, "peers": ["no port"]}', "peer"),
        (b'{"name": "n1", "id": "x", "incarnation": 1, "extra": true}', "extra"),
        (b'{"name": "n1", "id": "x", "incarnation": 1, "tags": {"k": 1}}', "tags"),
        (b'{"name": "n1", "id": "x", "incarnation": 1, "tags": {"k": "%s"}}' % (b"v" * 600), "512-byte limit"),
    ],
    ids=[
        "empty",
        "binary",
        "truncated",
        "array",
        "missing",
        "mistyped",
        "negative",
        "no-name",
        "bad-peer",
        "unknown",
        "mistyped-tags",
        "tags-too-big",
    ],
)
def test_corrupt_file_is_reported_not_raised_as_anything_else(tmp_path: Path, content: bytes, mentions: str) -> None:
    (tmp_path / "node.json").write_bytes(content)
    with pytest.raises(SnapshotError) as e:
        persistence.load(tmp_path)
    assert mentions in str(e.value) and "node.json" in str(e.value)


def test_unreadable_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "node.json").mkdir()  # read as a file, it fails (even for root, unlike chmod)
    with pytest.raises(SnapshotError, match="not a regular file"):
        persistence.load(tmp_path)
    with pytest.raises(OSError):
        persistence.save(tmp_path, SNAP)


def test_restarted_incarnation_is_above_the_saved_one_whatever_the_clock() -> None:
    assert persistence.next_incarnation(None, 1000) == 1000
    assert persistence.next_incarnation(Snapshot(name="n", id="i", incarnation=5), 1000) == 1000
    # A clock that went backwards (or refutations that ran ahead of it) cannot take us back.
    assert persistence.next_incarnation(Snapshot(name="n", id="i", incarnation=5000), 1000) == 5001


def test_join_seeds_are_a_bounded_sample_without_ourselves() -> None:
    peers = [f"10.0.0.{i}:2428" for i in range(1, 40)]
    snap = Snapshot(name="n", id="i", incarnation=1, peers=peers)
    seeds = persistence.join_seeds(snap, random.Random(1), own="10.0.0.1:2428")
    assert len(seeds) == persistence.JOIN_PEERS == len(set(seeds))
    assert ("10.0.0.1", 2428) not in seeds
    assert all(f"{h}:{p}" in peers for h, p in seeds)
    small = Snapshot(name="n", id="i", incarnation=1, peers=["a:1", "b:2"])
    assert sorted(persistence.join_seeds(small, random.Random(1), own="a:1")) == [("b", 2)]


def test_rejoin_seeds_after_a_crash_always_after_a_leave_only_with_rejoin() -> None:
    rng = random.Random(1)
    crashed = Snapshot(name="n1", id="x", incarnation=5, peers=["10.0.0.2:2428", "10.0.0.1:2428"])
    left = Snapshot(name="n1", id="x", incarnation=5, peers=["10.0.0.2:2428"], left=True)
    assert persistence.rejoin_seeds(crashed, rng, "10.0.0.1:2428", rejoin=False) == [("10.0.0.2", 2428)]
    assert persistence.rejoin_seeds(left, rng, "10.0.0.1:2428", rejoin=False) == []
    assert persistence.rejoin_seeds(left, rng, "10.0.0.1:2428", rejoin=True) == [("10.0.0.2", 2428)]
    assert persistence.rejoin_seeds(None, rng, "10.0.0.1:2428", rejoin=True) == []
