"""The retransmit-limited broadcast queue behind rumor mongering.

Each queued message has a budget of transmissions (``Config.retransmits``: fanout plus a
term growing with log N). A flush sends a datagram to each of ``fanout`` random peers,
packing the least-sent messages first (oldest first among equals, so a burst cannot starve
older messages); each message it carries spends one transmission, and leaves the queue when
its budget is spent. A newer message under the same key (news about the same member)
replaces the older one, like memberlist's invalidating broadcasts.

Messages wait in one FIFO per transmission count (level): a message sent k times sits at
the back of level k. Taking is then O(1) per message (a heap cost a log n push and pop per
transmission, and was the hottest function of a loaded node).
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class _Entry:
    key: str
    data: bytes
    remaining: int
    sent: int
    seq: int


class BroadcastQueue:
    MAX_SKIPPED = 16  # messages too big for the room left that one take looks past
    MIN_ROOM = 256  # ... and only while at least this much room is left (else: full enough)

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._levels: list[deque[_Entry]] = [deque()]  # by times sent; stale entries skipped
        self.bytes = 0  # encoded size of the queued messages
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: str, data: bytes, transmits: int) -> None:
        e = _Entry(key, data, transmits, 0, next(self._seq))
        old = self._entries.get(key)
        if old is not None:
            self.bytes -= len(old.data)
        self._entries[key] = e
        self.bytes += len(data)
        self._levels[0].append(e)

    def take(self, budget: int) -> list[bytes]:
        """Messages for one datagram of at most ``budget`` bytes of message data."""
        entries = self._entries
        chosen: list[bytes] = []
        spent: list[_Entry] = []
        used = 0
        full = False
        for level in self._levels:
            skipped: list[_Entry] = []
            while level:
                e = level.popleft()
                if entries.get(e.key) is not e:
                    continue  # replaced or gone
                size = len(e.data) + 1
                if used + size > budget and chosen:
                    skipped.append(e)
                    if budget - used < self.MIN_ROOM or len(skipped) >= self.MAX_SKIPPED:
                        full = True
                        break
                    continue
                chosen.append(e.data)
                spent.append(e)
                used += size
                if used >= budget:
                    full = True
                    break
            level.extendleft(reversed(skipped))  # back in their places, at the front
            if full:
                break
        levels = self._levels
        for e in spent:
            e.sent += 1
            e.remaining -= 1
            if e.remaining <= 0:
                del entries[e.key]
                self.bytes -= len(e.data)
            else:
                while len(levels) <= e.sent:
                    levels.append(deque())
                levels[e.sent].append(e)
        if not entries:
            for level in levels:
                level.clear()
        return chosen

    def clear(self) -> None:
        self._entries.clear()
        for level in self._levels:
            level.clear()
        self.bytes = 0
