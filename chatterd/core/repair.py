"""Recovery of the rumors that rumor mongering missed: numbered streams and digest repair.

Rumor mongering reaches every node with high probability, not certainty: at the default
budget about one (message, node) pair in 10^4 to 10^5 is never delivered (tests/sim).
This module closes that gap the way Bimodal Multicast (Birman et al., 1999) does, with a
gossiped digest of recent history and solicited retransmissions:

* Every node numbers the rumors it originates: stream ``(origin, boot)``, sequence 1, 2, ...
  ``boot`` is the origin's start time in milliseconds, so a restarted node opens a new stream.
* Every node keeps the rumors it delivered in the last ``window`` seconds, and per stream
  the lowest and highest sequence it saw and the gaps in between.
* Every ``repair_interval`` while it holds recent rumors, a node sends one random peer a
  :class:`~chatterd.core.wire.Have` listing its streams (low, high, gaps). The peer sends
  back the rumors it holds that the summary lacks (forwarded no further: hops 0), and when
  the summary shows that the peer itself lacks something, answers with its own Have.

A message that only one node missed is thus repaired within a repair interval or two, and
a node that missed a whole stream learns of it from a neighbour's summary. When nothing was
sent for ``window`` seconds the store is empty and the repair timer stops: an idle cluster
pays nothing. Rumors without a sequence number (sent by an older node) are not tracked.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgspec

from chatterd.core import wire
from chatterd.core.config import (
    CHUNK_HEADER_ROOM,
    MAX_GAPS_KEPT,
    MAX_REPAIR_RUMORS,
    MAX_SUMMARY_GAPS,
    MAX_SUMMARY_STREAMS,
)
from chatterd.core.context import Context, Part
from chatterd.core.gossip import Gossip

Addr = tuple[str, int]

StreamKey = tuple[str, int]  # (origin, boot)

MAX_GAPS = MAX_GAPS_KEPT  # gaps remembered per stream; older ones are given up


@dataclass(slots=True)
class Stream:
    low: int
    high: int
    last: float  # when we last delivered one of its rumors
    gaps: dict[int, float] = field(default_factory=dict)  # missing seq → when noticed
    held: dict[int, tuple[float, int, Any]] = field(default_factory=dict)  # seq → (at, ts, rumor)


class RepairStore:
    def __init__(self, window: float, grace: float, max_held: int = 200_000) -> None:
        self.window = window
        self.grace = grace  # a gap younger than this may still be in flight: not asked for
        self.max_held = max_held
        self.streams: dict[StreamKey, Stream] = {}
        self._order: deque[tuple[float, StreamKey, int]] = deque()  # (at, stream, seq) by arrival
        self._turn = 0  # rotation of the streams listed when they do not all fit a summary
        self.given_up = 0  # gaps dropped (too many, or older than the window)

    def __len__(self) -> int:
        return len(self._order)

    def record(self, key: StreamKey, seq: int, ts: int, rumor: Any, now: float) -> bool:
        """A rumor of this stream was delivered. Returns True if it filled a known gap."""
        s = self.streams.get(key)
        filled = False
        if s is None:
            s = self.streams[key] = Stream(low=seq, high=seq, last=now)
        else:
            s.last = now
            if seq > s.high:
                start = max(s.high + 1, seq - MAX_GAPS)
                self.given_up += start - (s.high + 1)
                for q in range(start, seq):
                    s.gaps[q] = now
                s.high = seq
                if len(s.gaps) > MAX_GAPS:
                    for q in sorted(s.gaps)[: len(s.gaps) - MAX_GAPS]:
                        del s.gaps[q]
                        self.given_up += 1
            elif seq < s.low:
                # Older than anything we had: what lies between was missed as well.
                for q in range(max(seq + 1, s.low - MAX_GAPS), s.low):
                    s.gaps[q] = now
                s.low = seq
            else:
                filled = s.gaps.pop(seq, None) is not None
        s.held[seq] = (now, ts, rumor)
        self._order.append((now, key, seq))
        if len(self._order) > self.max_held:
            self._drop_oldest()
        return filled

    def expire(self, now: float) -> None:
        horizon = now - self.window
        order = self._order
        while order and order[0][0] <= horizon:
            self._drop_oldest()
        for key, s in list(self.streams.items()):
            if s.last <= horizon and not s.held:
                self.given_up += len(s.gaps)
                del self.streams[key]
            elif s.gaps:
                for q in [q for q, t in s.gaps.items() if t <= horizon]:
                    del s.gaps[q]
                    self.given_up += 1

    def _drop_oldest(self) -> None:
        _, key, seq = self._order.popleft()
        s = self.streams.get(key)
        if s is not None:
            s.held.pop(seq, None)

    # ------------------------------------------------------------------ summaries

    def summary(self, now: float, budget: int) -> tuple[list[list[Any]], bool]:
        """Our streams as [origin, boot, low, high, [gaps...]] entries within ``budget`` bytes
        of JSON. The flag says whether every stream is listed. When they do not all fit,
        streams with gaps come first, and the others take turns from one summary to the next,
        so every stream's tail is compared sooner or later."""
        ripe = now - self.grace
        with_gaps: list[list[Any]] = []
        others: list[list[Any]] = []
        for (origin, boot), s in self.streams.items():
            gaps = sorted(q for q, t in s.gaps.items() if t <= ripe)[:MAX_SUMMARY_GAPS]
            (with_gaps if gaps else others).append([origin, boot, s.low, s.high, gaps])
        start = self._turn % len(others) if others else 0
        others = others[start:] + others[:start]
        entries: list[list[Any]] = []
        size = 0
        for e in with_gaps + others:
            cost = len(e[0]) + 12 + sum(len(str(x)) for x in e[1:4]) + sum(len(str(q)) + 1 for q in e[4])
            if size + cost > budget or len(entries) >= MAX_SUMMARY_STREAMS:
                self._turn = start + len(entries) - len(with_gaps)  # the next summary goes on from here
                return entries, False
            entries.append(e)
            size += cost
        return entries, True

    def answer(self, entries: list[list[Any]], complete: bool, since_ms: int, now: float, limit: int) -> list[Any]:
        """The rumors we hold that a peer's summary lacks, oldest first, at most ``limit``.

        Only rumors we have held for ``grace`` seconds are offered (younger ones are probably
        still on their way to the peer), and of streams the peer does not list or rumors
        older than its low mark, only those sent since it joined (``since_ms``)."""
        ripe = now - self.grace
        listed: dict[StreamKey, list[Any]] = {}
        for e in entries:
            listed[(e[0], e[1])] = e
        out: list[tuple[float, Any]] = []
        for key, s in self.streams.items():
            found = listed.get(key)
            if found is None:
                if not complete:
                    continue
                out += [(at, r) for at, ts, r in s.held.values() if at <= ripe and ts >= since_ms]
                continue
            low, high, gaps = found[2], found[3], found[4]
            wanted = [*gaps, *range(max(high + 1, s.low), s.high + 1), *range(s.low, min(low, s.high + 1))]
            for seq in wanted:
                h = s.held.get(seq)
                if h is not None and h[0] <= ripe and (seq >= low or h[1] >= since_ms):
                    out.append((h[0], h[2]))
        out.sort(key=lambda x: x[0])
        return [r for _, r in out[:limit]]

    def behind(self, entries: list[list[Any]]) -> bool:
        """Does a peer's summary show rumors that we lack?"""
        for e in entries:
            s = self.streams.get((e[0], e[1]))
            if s is None or e[3] > s.high or e[2] < s.low:
                return True
            theirs_missing = set(e[4])
            for q in s.gaps:
                if e[2] <= q <= e[3] and q not in theirs_missing:
                    return True
        return False


class Repair(Part):
    """The repair rounds: while we hold recent rumors, every ``repair_interval`` we send our
    stream summary (Have) to one random peer; a peer sends back what our summary lacks, and
    asks in turn when ours shows it is behind. The timer stops when nothing is recent."""

    def __init__(self, ctx: Context, gossip: Gossip) -> None:
        super().__init__(ctx)
        self.gossip = gossip
        self.store = RepairStore(ctx.cfg.repair_window, ctx.cfg.repair_grace)
        self.next_round: float | None = None  # set while we hold recent rumors

    def delivered(self, r: wire.Rumor, now: float) -> None:
        """A numbered rumor was delivered here: keep it, and note whether it filled a gap."""
        if self.store.record((r.origin, r.boot), r.seq, r.ts, r, now):
            self.fx.stats["repaired"] += 1
        if self.next_round is None:
            self.next_round = now + self.cfg.repair_interval * (0.5 + self.rng.random())

    def tick(self, now: float) -> None:
        if self.next_round is None or now < self.next_round:
            return
        self.store.expire(now)
        if not self.store.streams:
            self.next_round = None  # nothing recent: the timer stops until the next rumor
            return
        self.next_round = now + self.cfg.repair_interval * (0.75 + 0.5 * self.rng.random())
        peer = self.gossip.random_peer()
        if peer is not None:
            self.fx.stats["repair_summaries"] += 1
            self.fx.send_msg(self._have(now, reply=False), peer.addr)

    def _have(self, now: float, reply: bool) -> wire.Have:
        budget = wire.max_message_size(self.cfg.max_datagram) - len(self.local.name) - CHUNK_HEADER_ROOM
        entries, complete = self.store.summary(now, budget)
        return wire.Have(s=entries, since=self.local.boot, all=complete, reply=reply)  # type: ignore[arg-type]

    def on_have(self, msg: wire.Have, src: Addr, now: float) -> None:
        """Send a peer the recent rumors its summary lacks; if it has some we lack, say so."""
        if self.local.leaving:
            return
        entries: list[list[Any]] = msg.s  # type: ignore[assignment]
        missing = self.store.answer(entries, msg.all, msg.since, now, MAX_REPAIR_RUMORS)
        if missing:
            self.fx.stats["repair_sent"] += len(missing)
            encoded = [wire.encode_message(msgspec.structs.replace(r, hops=0)) for r in missing]
            for data in wire.pack(encoded, self.local.name, self.cfg.max_datagram):
                self.fx.send(data, src)
        if not msg.reply and self.store.behind(entries):
            self.fx.stats["repair_summaries"] += 1
            self.fx.send_msg(self._have(now, reply=True), src)
