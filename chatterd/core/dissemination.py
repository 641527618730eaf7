"""The retransmit-limited broadcast queue behind rumor mongering.

Each queued message has a budget of transmissions (``Config.retransmits``: fanout plus a
term growing with log N). A flush sends a datagram to each of ``fanout`` random peers,
packing the least-sent messages first; each message it carries spends one transmission,
and leaves the queue when its budget is spent. A newer message under the same key (news
about the same member) replaces the older one, like memberlist's invalidating broadcasts.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass


@dataclass(slots=True)
class _Entry:
    key: str
    data: bytes
    remaining: int
    sent: int
    seq: int


class BroadcastQueue:
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: str, data: bytes, transmits: int) -> None:
        self._entries[key] = _Entry(key, data, transmits, 0, next(self._seq))

    def take(self, budget: int) -> list[bytes]:
        """Messages for one datagram of at most ``budget`` bytes of message data."""
        if not self._entries:
            return []
        chosen: list[bytes] = []
        used = 0
        # Least-sent first; among equals, newest first (it has furthest to travel).
        for e in sorted(self._entries.values(), key=lambda e: (e.sent, -e.seq)):
            size = len(e.data) + 1
            if used + size > budget and chosen:
                continue
            chosen.append(e.data)
            used += size
            e.sent += 1
            e.remaining -= 1
            if e.remaining <= 0:
                del self._entries[e.key]
            if used >= budget:
                break
        return chosen

    def clear(self) -> None:
        self._entries.clear()
