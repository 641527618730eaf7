"""Round trips and network coordinates: the probe that feeds Vivaldi (core/coordinates.py).

Nothing measures a round trip on chatter's idle path (heartbeats go one way, probes only
follow a missed heartbeat), so every ``rtt_interval`` a node sends an
:class:`~chatterd.core.wire.RttPing` to one member: the next alive member along the
hash ring from the node's own random place (each probed once per round, as memberlist's
probes visit every member once per round). The first RTT_WARMUP_PROBES go every
RTT_WARMUP_INTERVAL, every other one to a member the detector watches (its slack needs
their coordinates), so that a new node settles quickly. The
member answers with an :class:`~chatterd.core.wire.RttAck` echoing the ping's random token,
with its coordinate. The asker times the round trip on its own clock (nothing from the
peer's clock is used), feeds it to its Vivaldi client and keeps the member's coordinate.
The ping carries no coordinate: bytes are what the idle budget is short of (core/config.py).

Gossip: the answer also carries up to RTT_GOSSIP_MAX coordinates the answerer measured
first-hand from other members (the next ones of its list, in turn), so that a node soon knows
the coordinates of members it has not probed yet: ``chatterd rtt A B`` works on a third node
(as Serf's coordinates ride on its probes' acks). What is heard second-hand is kept apart
(``heard``): it serves the operator's estimates, never the detector's slack or a query's
timeout (a member lying about another must not delay that one's detection), and a first-hand
coordinate always replaces it. The reconnection of a dead member (core/sync.py) knocks with a
ping too: an answer from a member held dead calls ``revived`` (the digest exchange that
merges both sides), and a member really gone costs 54 bytes, not a 64-bucket digest.

Bounds (every datagram is hostile): a coordinate is integers of bounded magnitude in a fixed
number of dimensions (core/messages.py Coord: anything else makes the datagram malformed,
dropped and counted); pings are answered for members only (the answer, about twice the
ping's size, is never sent to an address no member has); an answer counts only with the
token of a probe we sent, from that member's address, within COORD_MAX_RTT; at most
MAX_PENDING_RTT probes wait at once; the coordinates kept are the members' (those reaped
are forgotten every PRUNE_EVERY probes).

The estimates serve the failure detector (``slack``: more silence allowed to a member on a
slow link, see core/detector.py) and the operator (``chatterd rtt``, GET /v1/coordinates).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from chatterd.core import wire
from chatterd.core.config import RANDOM_PEER_TRIES
from chatterd.core.context import Context, Part
from chatterd.core.coordinates import (
    COORD_ERROR_WIRE_MAX,
    COORD_MAX_RTT,
    COORD_WIRE_MAX,
    RTT_GOSSIP_MAX,
    VIVALDI_ERROR_MAX,
    VIVALDI_HEIGHT_MIN,
    Coordinate,
    Vivaldi,
)
from chatterd.core.membership import DEAD

Addr = tuple[str, int]

# The first probes of a node go faster (start-up is not idle): 16 at 1 s, ~25 s in all.
RTT_WARMUP_PROBES = 16
RTT_WARMUP_INTERVAL = 1.0
# Probes waiting for their answer at once (one per rtt_interval); the oldest is dropped first.
MAX_PENDING_RTT = 8
# Slow links (core/detector.py): a member's suspicion waits for as much silence as the probes
# need on its link, at most this many times suspect_after more: a lying coordinate can delay
# the detection of that one member, boundedly, and never hasten it.
MAX_RTT_SLACK_FACTOR = 1.0
PRUNE_EVERY = 64  # probes between two sweeps of the coordinates of members no longer known


def to_wire(c: Coordinate) -> wire.Coord:
    def us(x: float, lo: int = -COORD_WIRE_MAX) -> int:
        return min(max(round(x * 1e6), lo), COORD_WIRE_MAX)

    error = min(max(round(c.error * 1000), 0), COORD_ERROR_WIRE_MAX)
    return wire.Coord(vec=[us(x) for x in c.vec], error=error, adjustment=us(c.adjustment), height=us(c.height, 0))


def from_wire(w: wire.Coord) -> Coordinate:
    """A decoded coordinate (already bounded integers: core/messages.py) in seconds."""
    return Coordinate(
        vec=tuple(x / 1e6 for x in w.vec),
        error=min(w.error / 1000, VIVALDI_ERROR_MAX),
        adjustment=w.adjustment / 1e6,
        height=max(w.height / 1e6, VIVALDI_HEIGHT_MIN),
    )


class RoundTrips(Part):
    def __init__(self, ctx: Context, now: float, watched: Callable[[], Iterable[str]] = lambda: ()) -> None:
        super().__init__(ctx)
        self.enabled = ctx.cfg.coordinates
        self.vivaldi = Vivaldi(ctx.rng)
        self.known: dict[str, Coordinate] = {}  # members → their latest coordinate, first-hand
        self.heard: dict[str, Coordinate] = {}  # members → a coordinate another member passed on
        self._to_gossip: list[str] = []  # the known members whose coordinates we pass on next
        # An answer from a member held dead (a reconnection's knock): core/sync.py merges.
        self.revived: Callable[[Addr], None] = lambda addr: None
        self.pending: dict[int, tuple[str, float]] = {}  # token → (member probed, when)
        self._cursor = self.rng.randrange(1 << 30)  # where this node walks the ring (_next_target)
        # The first probe at a random point of the warm-up interval: nodes started together
        # spread out.
        self.next_probe: float | None = now + self.rng.uniform(0, RTT_WARMUP_INTERVAL) if self.enabled else None
        self.generation = 0  # bumped when a coordinate changes: the slack cache's key
        self._slack: dict[str, float] = {}
        self._slack_gen = -1
        self._probes = 0  # sent so far
        self._watched: list[str] = []  # the members the detector watches (warm-up probes)
        self.watched = watched  # the members the detector watches

    def handlers(self) -> dict[type, Callable[[Any, Addr, float], None]]:
        """The messages this mechanism handles, for the node's dispatch table."""
        return {wire.RttPing: self.on_ping, wire.RttAck: self.on_ack}

    # ------------------------------------------------------------------ timers

    def deadline(self) -> float:
        """The next probe (none while we leave the cluster)."""
        if self.next_probe is None or self.local.leaving:
            return math.inf
        return self.next_probe

    def tick(self, now: float) -> None:
        if self.next_probe is None or now < self.next_probe:
            return
        warm = self._probes < RTT_WARMUP_PROBES
        self.next_probe = max(self.next_probe + (RTT_WARMUP_INTERVAL if warm else self.cfg.rtt_interval), now)
        for token in [t for t, (_, sent) in self.pending.items() if now - sent > COORD_MAX_RTT]:
            del self.pending[token]
        # Warming up, every other probe goes to a member the detector watches (it has their
        # coordinates at once); then all go round the ring: a biased choice of peers skews
        # the coordinates (every estimate more than 20 % off at the 95th percentile, measured).
        target = self._next_watched() if warm and self._probes % 2 else None
        target = target or self._next_target()
        if target is None:
            return
        self._probes += 1
        if self._probes % PRUNE_EVERY == 0:
            self._prune()
        self._send_probe(target, self.table.members[target].addr, now)
        self.fx.stats["rtt_probes"] += 1

    def knock(self, name: str, now: float) -> bool:
        """A ping to a member held dead (core/sync.py reconnect): if it answers, ``revived``.
        False if the coordinates are off (the caller sends its digest instead)."""
        m = self.table.get(name)
        if not self.enabled or m is None:
            return False
        self._send_probe(name, m.addr, now)
        self.fx.stats["rtt_knocks"] += 1
        return True

    def _send_probe(self, name: str, addr: Addr, now: float) -> None:
        while len(self.pending) >= MAX_PENDING_RTT:
            del self.pending[next(iter(self.pending))]  # the oldest: its answer is not coming
        token = self.rng.getrandbits(32)
        self.pending[token] = (name, now)
        self.fx.send_msg(wire.RttPing(t=token), addr)

    def _next_watched(self) -> str | None:
        """The next of the members the detector watches (their slack needs their coordinate)."""
        if not self._watched:
            self._watched = list(self.watched())
        while self._watched:
            name = self._watched.pop()
            m = self.table.get(name)
            if m is not None and m.state == "alive":
                return name
        return None

    def _next_target(self) -> str | None:
        """The next alive member along the ring (the ring's order is its hash order: random,
        and the same for all; each node walks it from its own random place): every member
        once per round, with no list of N names per node (10,000 nodes in the simulator)."""
        n, me = len(self.ring), self.local.name
        for _ in range(min(n, RANDOM_PEER_TRIES)):
            name = self.ring.name_at(self._cursor % n)
            self._cursor += 1
            m = self.table.get(name)
            if name != me and m is not None and m.state == "alive":
                return name
        return None

    def _prune(self) -> None:
        members = self.table.members
        for name in [n for n in self.known if n not in members]:
            del self.known[name]
            self.vivaldi.forget(name)
            self.generation += 1
        for name in [n for n in self.heard if n not in members]:
            del self.heard[name]

    # ------------------------------------------------------------------ messages

    def on_ping(self, msg: wire.RttPing, src: Addr, now: float) -> None:
        name = self.table.name_at(src)
        if not self.enabled or name is None or name == self.local.name or self.local.leaving:
            self.fx.stats["rtt_pings_ignored"] += 1
            return
        self.fx.send_msg(wire.RttAck(t=msg.t, c=to_wire(self.vivaldi.coord), g=self._gossip(name)), src)

    def _gossip(self, asker: str) -> list[wire.HeardCoord]:
        """The next RTT_GOSSIP_MAX coordinates we have first-hand, in turn (each known one is
        passed on once per pass through the list), but the asker's own."""
        out: list[wire.HeardCoord] = []
        for _ in range(2 * RTT_GOSSIP_MAX):
            if len(out) == RTT_GOSSIP_MAX:
                break
            if not self._to_gossip:
                self._to_gossip = list(self.known)
                if not self._to_gossip:
                    break
            name = self._to_gossip.pop()
            coord = self.known.get(name)
            m = self.table.get(name)
            if coord is not None and name != asker and m is not None and m.state != DEAD:
                out.append(wire.HeardCoord(node=name, c=to_wire(coord)))
        return out

    def on_ack(self, msg: wire.RttAck, src: Addr, now: float) -> None:
        probe = self.pending.get(msg.t)
        m = None if probe is None else self.table.get(probe[0])
        if probe is None or m is None or m.addr != src:
            self.fx.stats["rtt_acks_unexpected"] += 1
            return
        del self.pending[msg.t]
        name, sent = probe
        other = self._learn(name, msg.c)
        rtt = now - sent
        if not 0 <= rtt <= COORD_MAX_RTT:
            self.fx.stats["rtt_acks_unexpected"] += 1
            return
        self.vivaldi.update(name, other, rtt)
        self.generation += 1
        self.fx.stats["rtt_samples"] += 1
        for entry in msg.g:
            self._hear(entry, name)
        if m.state == DEAD:
            self.revived(src)  # a reconnection's knock answered: it is not gone after all

    def _hear(self, entry: wire.HeardCoord, sender: str) -> None:
        """A coordinate passed on by ``sender``: kept if it is of a member we have not measured
        ourselves (first-hand wins), and not of us or of the sender (its own came in ``c``)."""
        name = entry.node
        if name in (self.local.name, sender) or name not in self.table.members:
            self.fx.stats["rtt_gossip_ignored"] += 1
            return
        if name not in self.known:
            self.heard[name] = from_wire(entry.c)
            self.fx.stats["rtt_gossip_heard"] += 1

    def _learn(self, name: str, c: wire.Coord) -> Coordinate:
        coord = from_wire(c)
        self.heard.pop(name, None)
        if self.known.get(name) != coord:
            self.known[name] = coord
            self.generation += 1
        return coord

    # ------------------------------------------------------------------ estimates

    def coordinate_of(self, name: str, heard: bool = True) -> Coordinate | None:
        """Our coordinate, a member's first-hand one, else (``heard``) one passed on."""
        if name == self.local.name:
            return self.vivaldi.coord
        return self.known.get(name) or (self.heard.get(name) if heard else None)

    def estimate(self, a: str, b: str, heard: bool = True) -> float | None:
        """The estimated round trip between members ``a`` and ``b``, in seconds, or None if
        the coordinate of either is not known here (``heard=False``: first-hand ones only)."""
        ca, cb = self.coordinate_of(a, heard), self.coordinate_of(b, heard)
        if ca is None or cb is None:
            return None
        return ca.distance(cb)

    def slack(self, name: str) -> float:
        """Extra silence (seconds) allowed to ``name`` before it is suspected, for a slow link:
        the probes between the first missed heartbeat and the suspicion need room for two
        round trips to it plus a probe interval. 0 when that fits in today's window (every
        LAN), or when its coordinate is unknown; at most MAX_RTT_SLACK_FACTOR * suspect_after."""
        if self._slack_gen != self.generation:
            self._slack.clear()
            self._slack_gen = self.generation
        s = self._slack.get(name)
        if s is None:
            s = self._slack[name] = self._compute_slack(name)
        return s

    def _compute_slack(self, name: str) -> float:
        other = self.known.get(name)
        if other is None:
            return 0.0
        cfg = self.cfg
        rtt = self.vivaldi.coord.distance(other)
        grace = cfg.probe_after if cfg.probe_before_suspect else cfg.heartbeat_interval
        need = 2 * rtt + cfg.probe_interval - (cfg.suspect_after - grace)
        return min(max(need, 0.0), MAX_RTT_SLACK_FACTOR * cfg.suspect_after)
