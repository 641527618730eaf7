"""A node's identity on disk (``--data-dir``), like Serf's snapshot: who it was, so that a
restarted node comes back as itself and finds its cluster without ``--join``.

    DIR/node.json    {"name": "n1", "id": "<uuid>", "incarnation": 1754..., "peers": ["10.0.0.2:2428", ...],
                      "tags": {"role": "db"}}

The file is replaced atomically (a temporary file in the same directory, fsync, rename), so a
crash leaves either the old file or the new one, never half of one. On start the runtime
reuses the id, starts at an incarnation above the saved one, joins through the saved peers
as well as any ``--join`` seeds, and keeps its saved tags unless ``--tag`` gives new ones.
A file that is missing, unreadable or not what we write is reported by :func:`load` as a
:class:`SnapshotError` (the caller logs one line and starts afresh): it never stops the node.
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from pathlib import Path

import msgspec

from chatterd.core import tags, wire
from chatterd.core.config import (
    PERSIST_CHECK_INTERVAL,
    PERSIST_JOIN_PEERS,
    PERSIST_MAX_PEERS,
    PERSIST_PEERS_INTERVAL,
)

FILE_NAME = "node.json"
# The runtime looks every CHECK_INTERVAL seconds whether what it would save changed. A new
# incarnation is saved at once (it is what keeps a restarted node ahead of its past); a change
# of peers at most every PEERS_INTERVAL seconds, so membership churn does not mean disk churn.
CHECK_INTERVAL = PERSIST_CHECK_INTERVAL
PEERS_INTERVAL = PERSIST_PEERS_INTERVAL
# Peers saved, and how many of them a restarted node sends its join to: one live peer is
# enough to rejoin, and a join goes to every seed at each retry.
MAX_PEERS = PERSIST_MAX_PEERS
JOIN_PEERS = PERSIST_JOIN_PEERS


class Snapshot(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    id: str
    incarnation: int
    peers: list[str] = []
    tags: dict[str, str] = {}


class SnapshotError(Exception):
    """The saved state cannot be used; the text says why, for one log line."""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Snapshot)


def path_of(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def load(data_dir: Path) -> Snapshot | None:
    """The saved snapshot; None when there is none yet. Raises SnapshotError."""
    path = path_of(data_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise SnapshotError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        snap = _decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise SnapshotError(f"corrupt {path}: {e}") from None
    if not snap.name or not snap.id:
        raise SnapshotError(f"corrupt {path}: empty name or id")
    if snap.incarnation < 0:
        raise SnapshotError(f"corrupt {path}: negative incarnation")
    reason = tags.problem(snap.tags)
    if reason is not None:
        raise SnapshotError(f"corrupt {path}: {reason}")
    for p in snap.peers:
        try:
            wire.parse_addr(p)
        except ValueError as e:
            raise SnapshotError(f"corrupt {path}: peer {e}") from None
    return snap


def save(data_dir: Path, snap: Snapshot) -> None:
    """Replace the saved snapshot atomically. Raises OSError."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{FILE_NAME}.", suffix=".tmp", dir=data_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_encoder.encode(snap) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path_of(data_dir))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename itself is durable once the directory is synced.
    with contextlib.suppress(OSError):
        dfd = os.open(data_dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def join_seeds(snap: Snapshot, rng: random.Random, own: str) -> list[tuple[str, int]]:
    """Up to JOIN_PEERS of the saved peers (not ourselves), chosen at random, as seeds."""
    peers = [p for p in snap.peers if p != own]
    chosen = rng.sample(peers, min(JOIN_PEERS, len(peers)))
    return [wire.parse_addr(p) for p in chosen]


def next_incarnation(snap: Snapshot | None, clock_inc: int) -> int:
    """A restarted node's incarnation: above the saved one, whatever the clock says."""
    return clock_inc if snap is None else max(clock_inc, snap.incarnation + 1)
