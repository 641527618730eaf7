"""A node's identity on disk (``--data-dir``), like Serf's snapshot: who it was, so that a
restarted node comes back as itself and finds its cluster without ``--join``.

    DIR/node.json    {"name": "n1", "id": "<uuid>", "incarnation": 1754..., "peers": ["10.0.0.2:2428", ...],
                      "tags": {"role": "db"}, "left": false}

The file is replaced atomically (a temporary file in the same directory, fsync, rename), so a
crash leaves either the old file or the new one, never half of one. On start the runtime
reuses the id, starts at an incarnation above the saved one, joins through the saved peers
as well as any ``--join`` seeds (the saved peers not after a graceful leave, unless
``--rejoin``: Serf's rule), and keeps its saved tags unless ``--tag`` gives new ones.
A file that is missing, unreadable or not what we write is reported by :func:`load` as a
:class:`SnapshotError` (the caller logs one line and starts afresh): it never stops the node.

:class:`Persister` is what the runtime uses: :meth:`Persister.load` at start (the identity to
reuse, or None, with one log line saying which), :meth:`Persister.save_if_changed` at start
and at exit, and :meth:`Persister.run` in between, which saves as the node changes.
"""

from __future__ import annotations

import os
import random
import stat
import time
from collections.abc import Mapping
from pathlib import Path

import msgspec
import structlog
import trio

from chatterd.atomicfile import replace_private
from chatterd.core import tags, wire
from chatterd.core.bounds import U63
from chatterd.core.config import (
    PERSIST_CHECK_INTERVAL,
    PERSIST_JOIN_PEERS,
    PERSIST_MAX_FILE,
    PERSIST_MAX_PEERS,
    PERSIST_PEERS_INTERVAL,
    Config,
)
from chatterd.core.local import check_tags
from chatterd.core.membership import LIVE
from chatterd.core.node import Node

log = structlog.get_logger("chatterd.runtime")  # the runtime's lines, as before this class

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
    incarnation: U63
    peers: list[str] = []
    tags: dict[str, str] = {}
    left: bool = False  # its last life ended in a graceful leave (then --rejoin decides: rejoin_seeds)


class SnapshotError(Exception):
    """The saved state cannot be used; the text says why, for one log line."""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Snapshot)


def path_of(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def _read_regular(path: Path, limit: int) -> bytes | None:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes; None if
    there is none. Anything else (a symlink, a FIFO, a device, a directory, a bigger file)
    raises SnapshotError without blocking or reading more than ``limit`` + 1 bytes: the file
    is opened without following a symlink and without waiting for a FIFO's writer, and
    checked again once open (it may have been replaced in between)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise SnapshotError(f"cannot read {path}: {e.strerror or e}") from None
    _check_regular(path, st, limit)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise SnapshotError(f"cannot read {path}: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        _check_regular(path, os.fstat(f.fileno()), limit)
        data = f.read(limit + 1)
    if len(data) > limit:
        raise SnapshotError(f"{path} is over {limit} bytes: not a state file of ours")
    return data


def _check_regular(path: Path, st: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise SnapshotError(f"{path} is {kind}: not read")
    if st.st_size > limit:
        raise SnapshotError(f"{path} is {st.st_size} bytes, over {limit}: not a state file of ours")


def load(data_dir: Path) -> Snapshot | None:
    """The saved snapshot; None when there is none yet. Raises SnapshotError."""
    path = path_of(data_dir)
    data = _read_regular(path, PERSIST_MAX_FILE)
    if data is None:
        return None
    try:
        snap = _decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise SnapshotError(f"corrupt {path}: {e}") from None
    if not snap.name or not snap.id:
        raise SnapshotError(f"corrupt {path}: empty name or id")
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
    replace_private(path_of(data_dir), _encoder.encode(snap) + b"\n")


def join_seeds(snap: Snapshot, rng: random.Random, own: str) -> list[tuple[str, int]]:
    """Up to JOIN_PEERS of the saved peers (not ourselves), chosen at random, as seeds."""
    peers = [p for p in snap.peers if p != own]
    chosen = rng.sample(peers, min(JOIN_PEERS, len(peers)))
    return [wire.parse_addr(p) for p in chosen]


def rejoin_seeds(snap: Snapshot | None, rng: random.Random, own: str, rejoin: bool) -> list[tuple[str, int]]:
    """The saved peers to join through, as Serf's snapshot does: after a crash or a kill, always;
    after a graceful leave (``chatterd leave``, SIGTERM, SIGINT) only with ``--rejoin`` (one log
    line says which). ``--join`` seeds are joined in every case."""
    if snap is None or not snap.peers:
        return []
    if snap.left and not rejoin:
        log.info(
            "state_left",
            peers=len(snap.peers),
            action="not rejoining the saved peers after a graceful leave (--rejoin does)",
        )
        return []
    if snap.left:
        log.info("state_rejoin", peers=len(snap.peers), action="rejoining the saved peers after a graceful leave")
    return join_seeds(snap, rng, own)


def next_incarnation(snap: Snapshot | None, clock_inc: int) -> int:
    """A restarted node's incarnation: above the saved one, whatever the clock says."""
    return clock_inc if snap is None else max(clock_inc, snap.incarnation + 1)


class Persister:
    """The saved identity of one node in ``data_dir`` (None: nothing is loaded or saved).

    ``given_tags`` are the node's tags from the command line (--tag, --role): when there are
    none, the saved tags are kept, after a check against ``config``'s size limits.
    """

    def __init__(
        self, data_dir: Path | None, name: str, config: Config, given_tags: Mapping[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.name = name
        self.config = config
        self.tags_given = bool(given_tags)
        self.loaded_peers: list[str] = []  # the saved peers, kept while the node knows no live one
        self.saved: Snapshot | None = None  # last snapshot written
        self._tried: Snapshot | None = None  # last snapshot we tried to write
        self._tried_at = 0.0

    def load(self) -> Snapshot | None:
        """The saved identity to reuse, or None (one log line says why not)."""
        data_dir = self.data_dir
        if data_dir is None:
            return None
        path = str(path_of(data_dir))
        try:
            snap = load(data_dir)
        except SnapshotError as e:
            log.warning("state_unusable", path=path, error=str(e), action="starting afresh")
            return None
        if snap is None:
            log.info("state_fresh", path=path, reason="no saved state yet")
            return None
        if snap.name != self.name:
            log.warning(
                "state_unusable",
                path=path,
                error=f"saved for node {snap.name!r}, not {self.name!r}",
                action="starting afresh",
            )
            return None
        if snap.tags and not self.tags_given:
            try:
                check_tags(self.config, snap.name, snap.tags)
            except tags.TagsError as e:  # e.g. a smaller --max-datagram than last time
                log.warning("state_tags_dropped", path=path, error=str(e))
                snap.tags = {}
        self.loaded_peers = list(snap.peers)
        log.info(
            "state_loaded",
            path=path,
            id=snap.id,
            incarnation=snap.incarnation,
            peers=len(snap.peers),
            tags=snap.tags,
        )
        return snap

    def snapshot(self, node: Node) -> Snapshot:
        """What would be saved of ``node`` now. A node that knows no live peer keeps the peers
        it loaded: one that started alone (no --rejoin after a leave) can still --rejoin later."""
        peers = sorted(
            wire.format_addr(m.addr) for m in node.table.members.values() if m.name != node.name and m.state in LIVE
        )
        peers = peers[:MAX_PEERS] or self.loaded_peers
        return Snapshot(
            name=node.name, id=node.id, incarnation=node.inc, peers=peers, tags=node.tags, left=node.leaving
        )

    def save_if_changed(self, node: Node | None) -> None:
        """Save now if anything changed (at start and at exit: blocking, but small)."""
        if self.data_dir is not None and node is not None:
            snap = self.snapshot(node)
            if snap != self.saved:
                self.write(snap)

    def write(self, snap: Snapshot) -> None:
        """Save (at start, at exit, or in a worker thread); a failure is logged, not fatal."""
        assert self.data_dir is not None
        self._tried, self._tried_at = snap, time.monotonic()
        try:
            save(self.data_dir, snap)
        except OSError as e:
            log.warning("state_save_failed", path=str(path_of(self.data_dir)), error=str(e))
        else:
            self.saved = snap

    async def run(self, node: Node) -> None:
        """Save a new incarnation at once, other changes (peers) at most every PEERS_INTERVAL
        seconds; a failed write is retried on the same terms. Runs until cancelled."""
        if self.data_dir is None:
            return
        while True:
            await trio.sleep(CHECK_INTERVAL)
            snap = self.snapshot(node)
            if snap == self.saved:
                continue
            tried = self._tried
            urgent = tried is None or snap.incarnation != tried.incarnation
            if urgent or time.monotonic() - self._tried_at >= PEERS_INTERVAL:
                await trio.to_thread.run_sync(self.write, snap)
