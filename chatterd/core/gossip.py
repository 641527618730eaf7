"""Gossip: every piece of news (member states, role claims, rumors) spread by pushing it
to ``fanout`` random live peers, each message a limited number of times.

News waits in the retransmit-limited :class:`~chatterd.core.queue.BroadcastQueue`; a flush
packs the least-sent messages into datagrams for each of ``fanout`` random members, and
runs again every ``gossip_interval`` while anything is left to send. Idle, it costs nothing.
"""

from __future__ import annotations

from chatterd.core import wire
from chatterd.core.config import MAX_FLUSH_DATAGRAMS, RANDOM_PEER_TRIES
from chatterd.core.context import Context, Part
from chatterd.core.membership import Member
from chatterd.core.queue import BroadcastQueue


class Gossip(Part):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.queue = BroadcastQueue()
        self.next_flush: float | None = None

    def broadcast(self, key: str, msg: wire.Message, now: float) -> None:
        """Queue news for the cluster; a newer message under the same ``key`` replaces it."""
        if self.local.leaving:
            return
        self.queue.add(key, wire.encode_message(msg), self.cfg.retransmits(len(self.ring)))
        due = now + self.cfg.flush_delay
        if self.next_flush is None or due < self.next_flush:
            self.next_flush = due

    def clear(self) -> None:
        self.queue.clear()
        self.next_flush = None

    def random_peer(self) -> Member | None:
        """A random live member other than ourselves, or None."""
        n = len(self.ring)
        if n <= 1:
            return None
        for _ in range(RANDOM_PEER_TRIES):
            name = self.ring.name_at(self.rng.randrange(n))
            if name != self.local.name:
                return self.table.members[name]
        return None

    def tick(self, now: float) -> None:
        if self.next_flush is not None and now >= self.next_flush:
            self.flush(now)

    def flush(self, now: float) -> None:
        n = len(self.ring)
        if n <= 1:
            self.clear()
            return
        me = self.local.name
        k = min(self.cfg.fanout, n - 1)
        targets: dict[str, None] = {}  # a dict, not a set: its order (and so a seeded run) is reproducible
        while len(targets) < k:
            name = self.ring.name_at(self.rng.randrange(n))
            if name != me:
                targets[name] = None
        budget = wire.max_message_size(self.cfg.max_datagram) - len(me)
        # Enough datagrams per target to carry the whole backlog once (a loaded node drains
        # many messages per turn), at most MAX_FLUSH_DATAGRAMS each.
        per_target = min(MAX_FLUSH_DATAGRAMS, max(1, -(-self.queue.bytes // budget)))
        for name in targets:
            msgs: list[bytes] = []
            for _ in range(per_target):
                batch = self.queue.take(budget)
                if not batch:
                    break
                msgs += batch
            if not msgs:
                break
            for data in wire.pack(msgs, me, self.cfg.max_datagram):
                self.fx.send(data, self.table.members[name].addr)
        self.next_flush = now + self.cfg.gossip_interval if len(self.queue) else None
