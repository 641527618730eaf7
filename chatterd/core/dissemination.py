"""The retransmit-limited broadcast queue behind rumor mongering.

Each queued message has a budget of transmissions (``Config.retransmits``: fanout plus a
term growing with log N). A flush sends a datagram to each of ``fanout`` random peers,
packing the least-sent messages first (oldest first among equals, so a burst cannot starve
older messages); each message it carries spends one transmission, and leaves the queue when
its budget is spent. A newer
message under the same key (news about the same member) replaces the older one, like
memberlist's invalidating broadcasts. A heap keeps each take O(k log n) for k messages
packed, so a long queue (a join storm, a burst of user messages) stays cheap.
"""

from __future__ import annotations

import heapq
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
    MAX_SKIPPED = 16  # messages too big for the room left that one take looks past
    MIN_ROOM = 256  # ... and only while at least this much room is left (else: full enough)

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[int, int, _Entry]] = []  # (sent, seq, entry); stale items skipped
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
        heapq.heappush(self._heap, (0, e.seq, e))

    def take(self, budget: int) -> list[bytes]:
        """Messages for one datagram of at most ``budget`` bytes of message data."""
        heap, entries = self._heap, self._entries
        chosen: list[bytes] = []
        spent: list[_Entry] = []
        skipped: list[tuple[int, int, _Entry]] = []
        used = 0
        while heap:
            item = heapq.heappop(heap)
            e = item[2]
            if entries.get(e.key) is not e:
                continue  # replaced or gone
            size = len(e.data) + 1
            if used + size > budget and chosen:
                skipped.append(item)
                if budget - used < self.MIN_ROOM or len(skipped) >= self.MAX_SKIPPED:
                    break
                continue
            chosen.append(e.data)
            spent.append(e)
            used += size
            if used >= budget:
                break
        for e in spent:
            e.sent += 1
            e.remaining -= 1
            if e.remaining <= 0:
                del entries[e.key]
                self.bytes -= len(e.data)
            else:
                heapq.heappush(heap, (e.sent, e.seq, e))
        for item in skipped:
            heapq.heappush(heap, item)
        if not entries:
            heap.clear()
        return chosen

    def clear(self) -> None:
        self._entries.clear()
        self._heap.clear()
        self.bytes = 0
