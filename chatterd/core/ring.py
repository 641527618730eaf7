"""Who monitors whom: every node's monitors are its successors on a hash ring.

All nodes order the live members the same way (by a hash of their names), so they agree,
without exchanging anything, on the ``k`` monitors of each node: the heartbeat targets of a
node are its ``k`` successors, and it monitors its ``k`` predecessors. Per-node load is k
heartbeats out and about k in per interval, whatever the cluster size; each node has k
independent observers (Rapid's multi-observer idea), which is what lets suspicion timeouts
shorten when they agree.
"""

from __future__ import annotations

import bisect
import functools
import hashlib


@functools.lru_cache(maxsize=1 << 16)
def ring_item(name: str) -> tuple[int, str]:
    """The ring position of a name (cached: positions never change)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big"), name


def ring_key(name: str) -> int:
    return ring_item(name)[0]


class Ring:
    def __init__(self, names: list[str] | None = None) -> None:
        self._keys: list[tuple[int, str]] = sorted(ring_item(n) for n in names or ())

    def __len__(self) -> int:
        return len(self._keys)

    def _index(self, name: str) -> int | None:
        item = ring_item(name)
        i = bisect.bisect_left(self._keys, item)
        return i if i < len(self._keys) and self._keys[i] == item else None

    def __contains__(self, name: str) -> bool:
        return self._index(name) is not None

    def add(self, name: str) -> bool:
        if name in self:
            return False
        bisect.insort(self._keys, ring_item(name))
        return True

    def remove(self, name: str) -> bool:
        i = self._index(name)
        if i is None:
            return False
        del self._keys[i]
        return True

    def adopt(self, other: Ring) -> None:
        """Copy another ring's order (a simulation's bootstrap)."""
        self._keys = list(other._keys)

    def successors(self, name: str, k: int) -> list[str]:
        """The k members after ``name`` on the ring (its monitors)."""
        return self._walk(name, k, 1)

    def predecessors(self, name: str, k: int) -> list[str]:
        """The k members before ``name`` (the members it monitors)."""
        return self._walk(name, k, -1)

    def _walk(self, name: str, k: int, step: int) -> list[str]:
        n = len(self._keys)
        i = self._index(name)
        if i is None or n <= 1:
            return []
        return [self._keys[(i + step * j) % n][1] for j in range(1, min(k, n - 1) + 1)]

    def name_at(self, i: int) -> str:
        return self._keys[i][1]
