"""Duplicate filtering in bounded memory: an expiring set of message ids.

Ids are kept in arrival order with the time they were first seen; entries older than
``ttl`` are dropped lazily, and the oldest entries are evicted once ``max_entries`` is
reached. Both bounds keep memory flat under any message rate.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


class SeenSet(Generic[V]):
    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, V | None]] = OrderedDict()
        self.evicted = 0  # entries dropped for lack of room before their ttl ran out

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> V | None:
        entry = self._entries.get(key)
        return entry[1] if entry else None

    def set(self, key: str, value: V) -> None:
        """Give a remembered key its value (it keeps its place and its time)."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries[key] = (entry[0], value)

    def add(self, key: str, now: float, value: V | None = None) -> bool:
        """Remember key. Returns False if it was already there (a duplicate)."""
        if key in self._entries:
            return False
        self._expire(now)
        if len(self._entries) >= self.max_entries:
            self._entries.popitem(last=False)
            self.evicted += 1
        self._entries[key] = (now, value)
        return True

    def _expire(self, now: float) -> None:
        horizon = now - self.ttl
        entries = self._entries
        while entries:
            key, (t, _) = next(iter(entries.items()))
            if t > horizon:
                break
            del entries[key]
