"""One shard of the sharded key-value service: its log, its data, and the rules that keep every
copy of it identical (used by shardnode.py; no I/O here but the ``push`` callable).

Keys are routed by a stable hash (crc32, not Python's salted ``hash()``): ``shard_of(key, S)``.
Shard ``i`` is the chatter role ``shard-i``; its holder (the primary) stamps each update
(epoch, seq), applies it and pushes it to every other live replica before acknowledging it.

Fencing and terms: a copy remembers ``term``, the epoch of the primary it last took entries
from, and ``top_epoch``, the highest epoch it has seen (role table or pushes). A push from an
epoch below ``top_epoch`` is refused (409), so a deposed primary cannot get an update
acknowledged once a copy has heard of its successor. A push from a new term must carry the
whole log (the new primary sends everything to a peer it has not synced yet): the copy
*replaces* its log with it, which drops an entry the old primary applied but never got
acknowledged (it is on some copies only). Within a term a push only appends.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

ROLE_PREFIX = "shard-"
RECEIVE_WAIT = 0.25  # seconds a push waits for the shard's lock before it is answered 503


def shard_of(key: str, shards: int) -> int:
    """The shard of ``key``: stable across processes and runs (crc32 of its UTF-8 bytes)."""
    return zlib.crc32(key.encode()) % shards


def role_of(shard: int) -> str:
    return f"{ROLE_PREFIX}{shard}"


class NotPrimary(Exception):
    pass


Push = Callable[[str, str, dict[str, Any]], dict[str, Any]]  # (peer name, peer http, body) → answer


class ShardLog:
    def __init__(self, index: int, me: str, in_sync: bool) -> None:
        self.index = index
        self.me = me
        self.lock = threading.RLock()  # this shard's state; one update or push at a time
        self.log: list[dict[str, Any]] = []
        self.data: dict[str, Any] = {}
        self.by_id: dict[str, dict[str, Any]] = {}
        self.epoch: int | None = None  # ours while we serve the shard
        self.top_epoch = 0
        self.term = 0  # epoch of the primary our log comes from
        self.holder: str | None = None
        self.in_sync = in_sync  # holds everything its primary acknowledged
        self.acked: dict[str, int] = {}  # peer → its last applied seq (while we are primary)

    # ------------------------------------------------------------ state
    def apply(self, e: dict[str, Any]) -> None:
        self.log.append(e)
        self.data[e["key"]] = e["value"]
        self.by_id[e["id"]] = e

    def replace(self, entries: list[dict[str, Any]]) -> None:
        self.log, self.data, self.by_id = [], {}, {}
        for e in entries:
            self.apply(e)

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "role": "primary" if self.epoch is not None else "standby",
                "epoch": self.epoch,
                "term": self.term,
                "holder": self.holder,
                "seq": len(self.log),
                "in_sync": self.in_sync,
                "data": dict(self.data),
                "log": [[e["epoch"], e["seq"], e["id"]] for e in self.log],
            }

    # ------------------------------------------------------------ role changes (watcher)
    def follow(self, holder: str | None, epoch: int, held_here: bool) -> str | None:
        """The role table's row for this shard; returns what changed, for the log."""
        with self.lock:
            self.holder = holder
            self.top_epoch = max(self.top_epoch, epoch)
            if held_here and self.epoch is None and epoch >= self.top_epoch:
                if not self.in_sync:
                    return None  # never serve a shard we have not caught up on (cannot happen: see README)
                self.epoch = self.term = epoch
                self.acked.clear()  # a new term: every peer gets the whole log first
                return f"primary of {role_of(self.index)} at epoch {epoch}, seq {len(self.log)}"
            if held_here and self.epoch is not None and epoch > self.epoch:  # lost and won again between polls
                self.epoch = self.term = epoch
                self.acked.clear()
                return f"primary of {role_of(self.index)} again, at epoch {epoch}"
            if not held_here and self.epoch is not None:
                self.epoch = None
                return f"no longer primary of {role_of(self.index)} (holder {holder})"
            return None

    # ------------------------------------------------------------ primary
    def update(self, uid: str, key: str, value: Any, peers: Callable[[], dict[str, str]], push: Push) -> dict[str, Any]:
        with self.lock:
            if self.epoch is None:
                raise NotPrimary
            if uid in self.by_id:
                e = self.by_id[uid]
                return {"seq": e["seq"], "epoch": e["epoch"], "by": self.me, "repeat": True}
            e = {"seq": len(self.log) + 1, "epoch": self.epoch, "id": uid, "key": key, "value": value}
            self.apply(e)
            self.replicate(peers, push, wait=True)
            if self.epoch != e["epoch"]:
                raise NotPrimary  # lost the shard meanwhile: not acknowledged
            return {"seq": e["seq"], "epoch": e["epoch"], "by": self.me, "repeat": False}

    def replicate(self, peers: Callable[[], dict[str, str]], push: Push, wait: bool) -> None:
        """Push what each live peer misses; ``wait``: until every live peer has it (or we lose
        the shard). ``peers()``: name → http address of the live replicas. Lock held."""
        while self.epoch is not None:
            missing = [name for name, http in peers().items() if not self.push_to(name, http, push) and wait]
            if not missing or not wait:
                return
            self.lock.release()  # let the watcher see the peer fail or the role move
            try:
                time.sleep(0.1)
            finally:
                self.lock.acquire()

    def push_to(self, name: str, http: str, push: Push) -> bool:
        assert self.epoch is not None
        start = self.acked.get(name, 0)
        body = {
            "shard": self.index,
            "epoch": self.epoch,
            "from": self.me,
            "start": start + 1,
            "primary_seq": len(self.log),
            "entries": self.log[start:],
        }
        try:
            r = push(name, http, body)
        except OSError:  # refused, timed out, 409 (a newer epoch exists: we are about to lose the shard)
            self.acked.pop(name, None)
            return False
        self.acked[name] = int(r["seq"])
        return self.acked[name] >= len(self.log)

    # ------------------------------------------------------------ copy
    def receive(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        # Two replicas that both think they are primary (a handoff in progress) each hold their
        # lock while pushing to the other: give up soon rather than wait out the push timeout.
        if not self.lock.acquire(timeout=RECEIVE_WAIT):
            return 503, {"error": "busy"}
        try:
            return self._receive(body)
        finally:
            self.lock.release()

    def _receive(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Called with the lock held."""
        epoch = int(body["epoch"])
        if epoch < self.top_epoch or (self.epoch is not None and epoch <= self.epoch):
            return 409, {"error": f"stale epoch {epoch} < {max(self.top_epoch, self.epoch or 0)}"}
        self.top_epoch = epoch
        if self.epoch is not None:  # a newer primary pushes to us: we are deposed
            self.epoch = None
        if epoch != self.term:
            if int(body["start"]) != 1:
                return 200, {"seq": 0}  # a new term: send us the whole log
            self.term = epoch
            self.replace(body["entries"])
        else:
            for e in body["entries"]:
                if e["seq"] == len(self.log) + 1:
                    self.apply(e)
        caught_up = len(self.log) >= int(body["primary_seq"])
        newly = caught_up and not self.in_sync
        self.in_sync = self.in_sync or caught_up
        return 200, {"seq": len(self.log), "caught_up": newly}
