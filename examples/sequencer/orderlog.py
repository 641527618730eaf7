"""The shared order log and its fence, and ``verify``, the full check of a log.

``OrderLog`` is one engine's handle on the log: one record per line in a file every engine
appends to (O_APPEND, under an exclusive ``flock``). Before each append the engine reads what
the others wrote; an engine whose epoch is lower than the highest epoch in the log is refused
("stale"), and an order id already in the log is not written again ("duplicate": a retry after
a lost acknowledgement).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK_WAIT = 1.0  # s: the longest an engine waits for the log's flock before answering "busy"


class OrderLog:
    """One engine's handle on the shared order log.

    Records: {"kind": "fence", "epoch": E, "engine": X, "t": wall} written once when engine X
    starts accepting in epoch E, and {"kind": "order", "id": N, "engine": X, "epoch": E, "t": ...}.
    Every append happens under ``flock(LOCK_EX)`` after reading the records appended since our
    last look, so the checks and the write are one step with respect to the other engines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._reader = open(path, "rb")
        self._mutex = threading.Lock()  # our own threads, before the flock (which is per file)
        self._partial = b""
        self.ids: set[int] = set()
        self.max_epoch = 0
        self.owners: dict[int, str] = {}  # epoch -> the engine that fenced it

    def close(self) -> None:
        os.close(self._fd)
        self._reader.close()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._mutex:
            deadline = time.monotonic() + LOCK_WAIT
            while True:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the order log is locked by another engine") from None
                    time.sleep(0.001)
            try:
                self._catch_up()
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _catch_up(self) -> None:
        data = self._partial + self._reader.read()
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            self._learn(json.loads(line))

    def _learn(self, rec: dict[str, Any]) -> None:
        epoch = int(rec["epoch"])
        self.max_epoch = max(self.max_epoch, epoch)
        self.owners.setdefault(epoch, rec["engine"])
        if rec["kind"] == "order":
            self.ids.add(int(rec["id"]))

    def _write(self, rec: dict[str, Any]) -> None:
        rec["t"] = round(time.time(), 6)
        os.write(self._fd, (json.dumps(rec, separators=(",", ":")) + "\n").encode())

    def _stale(self, engine: str, epoch: int) -> bool:
        return epoch < self.max_epoch or self.owners.get(epoch, engine) != engine

    def fence(self, engine: str, epoch: int) -> bool:
        """Start accepting in ``epoch``: False if the log already has a higher epoch (or this one
        belongs to another engine). The fence record shuts out every lower epoch at once."""
        with self._locked():
            if self._stale(engine, epoch):
                return False
            if epoch not in self.owners:
                self._write({"kind": "fence", "epoch": epoch, "engine": engine})
                self._learn({"kind": "fence", "epoch": epoch, "engine": engine})
            return True

    def append(self, order_id: int, engine: str, epoch: int) -> str:
        """'appended', 'duplicate' (already in the log: not written again) or 'stale'."""
        with self._locked():
            if self._stale(engine, epoch):
                return "stale"
            if order_id in self.ids:
                return "duplicate"
            if epoch not in self.owners:
                self._write({"kind": "fence", "epoch": epoch, "engine": engine})
                self._learn({"kind": "fence", "epoch": epoch, "engine": engine})
            rec = {"kind": "order", "id": order_id, "engine": engine, "epoch": epoch}
            self._write(rec)
            self._learn(rec)
            return "appended"


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def verify(path: Path, n: int) -> dict[str, Any]:
    """Check the log for orders 1..n: every id exactly once, no epoch accepted by two engines,
    epochs never going back in log order."""
    recs = read_log(path)
    seen: dict[int, int] = {}
    engines_of: dict[int, set[str]] = {}
    regressions = 0
    top = 0
    for rec in recs:
        epoch = int(rec["epoch"])
        engines_of.setdefault(epoch, set()).add(rec["engine"])
        if epoch < top:
            regressions += 1
        top = max(top, epoch)
        if rec["kind"] == "order":
            seen[int(rec["id"])] = seen.get(int(rec["id"]), 0) + 1
    duplicates = sorted(i for i, c in seen.items() if c > 1)
    gaps = sorted(set(range(1, n + 1)) - seen.keys())
    unexpected = sorted(i for i in seen if not 1 <= i <= n)
    split = {e: sorted(s) for e, s in engines_of.items() if len(s) > 1}
    return {
        "orders": sum(seen.values()),
        "duplicates": duplicates,
        "gaps": gaps,
        "unexpected": unexpected,
        "epochs": {e: sorted(s)[0] for e, s in sorted(engines_of.items())},
        "same_epoch_two_engines": split,
        "epoch_regressions": regressions,
        "ok": not duplicates and not gaps and not unexpected and not split and regressions == 0,
    }
