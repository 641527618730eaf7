"""--data-dir against hostile files: the state file is read only if it is a regular file
within PERSIST_MAX_FILE; a symlink, a FIFO (which must not block), a device or an oversize
file is a SnapshotError (one warning line and a fresh start), never a hang or a crash."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import structlog

from chatterd import persistence
from chatterd.core.config import LAN, PERSIST_MAX_FILE
from chatterd.persistence import Persister, Snapshot, SnapshotError

SNAP = Snapshot(name="n1", id="0b7a4e5c-1d2e-4f00-8a3b-5c6d7e8f9a0b", incarnation=17)


def _load_in_thread(data_dir: Path) -> BaseException | Snapshot | None:
    """persistence.load in a thread that must end within 5 s (a blocked open would hang)."""
    out: list[BaseException | Snapshot | None] = []

    def run() -> None:
        try:
            out.append(persistence.load(data_dir))
        except BaseException as e:  # handed back to the test
            out.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(5.0)
    assert not t.is_alive(), "load blocked"
    return out[0]


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    persistence.save(real, SNAP)
    (tmp_path / "node.json").symlink_to(real / "node.json")
    with pytest.raises(SnapshotError, match="symlink"):
        persistence.load(tmp_path)
    assert persistence.load(real) == SNAP  # the same content, read directly, is fine


def test_a_fifo_does_not_block(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "node.json")
    result = _load_in_thread(tmp_path)
    assert isinstance(result, SnapshotError) and "not a regular file" in str(result)


def test_a_device_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "node.json").symlink_to("/dev/zero")
    result = _load_in_thread(tmp_path)
    assert isinstance(result, SnapshotError)
    # A device node itself (not through a symlink) is refused the same way, without reading.
    with pytest.raises(SnapshotError, match="not a regular file"):
        persistence._read_regular(Path("/dev/zero"), PERSIST_MAX_FILE)


def test_a_directory_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "node.json").mkdir()
    with pytest.raises(SnapshotError, match="not a regular file"):
        persistence.load(tmp_path)


def test_an_oversize_file_is_refused(tmp_path: Path) -> None:
    padded = persistence._encoder.encode(SNAP)[:-1] + b"," + b" " * PERSIST_MAX_FILE + b'"x":1}'
    (tmp_path / "node.json").write_bytes(padded)
    with pytest.raises(SnapshotError, match="over"):
        persistence.load(tmp_path)
    # Just within the limit is read (and then judged by its content).
    persistence.save(tmp_path, SNAP)
    assert persistence.load(tmp_path) == SNAP


def test_an_incarnation_beyond_the_wire_bound_is_corrupt(tmp_path: Path) -> None:
    (tmp_path / "node.json").write_text(f'{{"name": "n1", "id": "x", "incarnation": {2**63}}}')
    with pytest.raises(SnapshotError, match="corrupt"):
        persistence.load(tmp_path)


@pytest.mark.parametrize("kind", ["symlink", "fifo", "oversize"])
def test_the_persister_logs_one_warning_and_starts_afresh(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "node.json"
    if kind == "symlink":
        target.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        target.write_bytes(b" " * (PERSIST_MAX_FILE + 1))
    p = Persister(tmp_path, "n1", LAN, {})
    with structlog.testing.capture_logs() as logs:
        assert p.load() is None
    assert [e["event"] for e in logs] == ["state_unusable"]
    assert logs[0]["log_level"] == "warning"
