"""The shared order log and its fence, and ``verify``, the full check of a log.

The log is in the seed system's line format, one record per line, the record's id first in
brackets, so the seed's own duplicate check works on it as it is::

    [42] epoch=8 engine=e2 t=1764643461.123456        an order: its id, who wrote it, when
    [fence-8] epoch=8 engine=e2 t=1764643461.101234   engine e2 starts accepting in epoch 8

    awk -F'[][]' '{print $2}' central_order_book.log | sort | uniq -d    # prints nothing

A fence's bracketed id, ``fence-EPOCH``, is unique too: one fence per epoch, written once.

``OrderLog`` is one engine's handle on the log: one record per line in a file every engine
appends to (O_APPEND, under an exclusive ``flock``). Before each append the engine reads what
the others wrote; an engine whose epoch is lower than the highest epoch in the log is refused
("stale"), and an order id already in the log is not written again ("duplicate": a retry after
a lost acknowledgement).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK_WAIT = 1.0  # s: the longest an engine waits for the log's flock before answering "busy"


class OrderLog:
    """One engine's handle on the shared order log.

    Records (see the module's docstring for their lines): a fence ``[fence-E]``, written once
    when engine X starts accepting in epoch E, and the orders ``[N]`` X appends in epoch E.
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
            self._learn(parse_line(line.decode()))

    def _learn(self, rec: dict[str, Any]) -> None:
        epoch = int(rec["epoch"])
        self.max_epoch = max(self.max_epoch, epoch)
        self.owners.setdefault(epoch, rec["engine"])
        if rec["kind"] == "order":
            self.ids.add(int(rec["id"]))

    def _write(self, rec: dict[str, Any]) -> None:
        rec["t"] = round(time.time(), 6)
        os.write(self._fd, (format_line(rec) + "\n").encode())  # one write: O_APPEND keeps it whole

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


FENCE = "fence-"  # a fence's bracketed id: fence-EPOCH


def format_line(rec: dict[str, Any]) -> str:
    """{"kind": "order", "id": 42, "epoch": 8, "engine": "e2", "t": T} -> '[42] epoch=8 engine=e2 t=T';
    a fence -> '[fence-8] epoch=8 engine=e2 t=T'."""
    engine = str(rec["engine"])
    if not engine or any(c.isspace() or c in "[]=" for c in engine):
        raise ValueError(f"engine name {engine!r}: no spaces, brackets or '=' allowed in the log")
    rid = f"{FENCE}{int(rec['epoch'])}" if rec["kind"] == "fence" else str(int(rec["id"]))
    return f"[{rid}] epoch={int(rec['epoch'])} engine={engine} t={rec['t']}"


def parse_line(line: str) -> dict[str, Any]:
    """The inverse of ``format_line``; ValueError on a line not in that form."""
    if not line.startswith("[") or "] " not in line:
        raise ValueError(f"not an order log line: {line!r}")
    rid, _, rest = line[1:].partition("] ")
    fields = dict(f.split("=", 1) for f in rest.split() if "=" in f)
    try:
        rec: dict[str, Any] = {"epoch": int(fields["epoch"]), "engine": fields["engine"], "t": float(fields["t"])}
    except KeyError as e:
        raise ValueError(f"no {e.args[0]}= in order log line {line!r}") from None
    if rid.startswith(FENCE):
        rec["kind"] = "fence"
        if int(rid.removeprefix(FENCE)) != rec["epoch"]:
            raise ValueError(f"fence id and epoch differ: {line!r}")
    else:
        rec.update(kind="order", id=int(rid))
    return rec


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [parse_line(line) for line in path.read_text().splitlines() if line.strip()]


def verify(path: Path, n: int) -> dict[str, Any]:
    """Check the log for orders 1..n: every id exactly once, no epoch accepted by two engines,
    epochs never going back in log order, one fence per epoch (so the seed's awk check, which
    reads every line's bracketed id, finds no duplicate either)."""
    recs = read_log(path)
    seen: dict[int, int] = {}
    fences: dict[int, int] = {}
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
        else:
            fences[epoch] = fences.get(epoch, 0) + 1
    duplicates = sorted(i for i, c in seen.items() if c > 1)
    gaps = sorted(set(range(1, n + 1)) - seen.keys())
    unexpected = sorted(i for i in seen if not 1 <= i <= n)
    split = {e: sorted(s) for e, s in engines_of.items() if len(s) > 1}
    fenced_twice = sorted(e for e, c in fences.items() if c > 1)
    return {
        "orders": sum(seen.values()),
        "duplicates": duplicates,
        "gaps": gaps,
        "unexpected": unexpected,
        "epochs": {e: sorted(s)[0] for e, s in sorted(engines_of.items())},
        "same_epoch_two_engines": split,
        "epoch_regressions": regressions,
        "fenced_twice": fenced_twice,
        "ok": not (duplicates or gaps or unexpected or split or fenced_twice) and regressions == 0,
    }
