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
import hashlib


def ring_key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")


class Ring:
    def __init__(self) -> None:
        self._keys: list[tuple[int, str]] = []
        self._names: set[str] = set()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def add(self, name: str) -> bool:
        if name in self._names:
            return False
        bisect.insort(self._keys, (ring_key(name), name))
        self._names.add(name)
        return True

    def remove(self, name: str) -> bool:
        if name not in self._names:
            return False
        item = (ring_key(name), name)
        i = bisect.bisect_left(self._keys, item)
        del self._keys[i]
        self._names.discard(name)
        return True

    def successors(self, name: str, k: int) -> list[str]:
        """The k members after ``name`` on the ring (its monitors)."""
        return self._walk(name, k, 1)

    def predecessors(self, name: str, k: int) -> list[str]:
        """The k members before ``name`` (the members it monitors)."""
        return self._walk(name, k, -1)

    def _walk(self, name: str, k: int, step: int) -> list[str]:
        n = len(self._keys)
        if name not in self._names or n <= 1:
            return []
        i = bisect.bisect_left(self._keys, (ring_key(name), name))
        return [self._keys[(i + step * j) % n][1] for j in range(1, min(k, n - 1) + 1)]

    def name_at(self, i: int) -> str:
        return self._keys[i][1]
