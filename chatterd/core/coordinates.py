"""Vivaldi network coordinates (Dabek et al. 2004), in the variant Serf's coordinate package
uses: a point in 8 Euclidean dimensions plus a height (the time a packet spends on the
node's own access link), an error estimate, and an adjustment term.

The estimated round trip between two nodes is the distance between their coordinates:

    |a.vec - b.vec| + a.height + b.height (+ a.adjustment + b.adjustment, when that is > 0)

Each measured round trip to a peer moves our coordinate (only ours) along the line to the
peer's, by a step weighted by how sure we are compared with the peer (its error against
ours), so that a new node with a large error moves a lot and a settled one a little. Before
it is used, a sample goes through a latency filter (the median of the last
VIVALDI_LATENCY_FILTER samples to that peer: one slow answer does not move us). The
adjustment is half the mean of the last VIVALDI_ADJUSTMENT_WINDOW residuals (measured minus
estimated): a per-node correction of what the Euclidean space cannot express. A
small gravity pulls every coordinate toward the origin, so that the whole cluster does not
drift away over months.

This module is the arithmetic only, pure: no clock, no I/O, randomness from the ``rng``
passed in. core/rtt.py measures the round trips and carries coordinates on the wire; the
constants are below, with their reasons.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass

# The algorithm's constants: Serf's coordinate package's (facts from its config.go: the
# Vivaldi paper's figures, tuned by Serf on real clusters), here rather than in core/config.py
# as Serf keeps them in its package. Every node of a cluster must agree on the dimensions:
# 8 Euclidean ones plus a height (a node's access link).
COORD_DIMENSIONS = 8
# The error starts (and is capped) at 1.5: "no idea".
VIVALDI_ERROR_MAX = 1.5
# cc: the step of an update (a fraction of the residual); ce: how fast the error follows.
VIVALDI_CC = 0.25
VIVALDI_CE = 0.25
# The adjustment term: half the mean residual of the last 20 samples.
VIVALDI_ADJUSTMENT_WINDOW = 20
# Smallest height: 10 µs, a node's own stack.
VIVALDI_HEIGHT_MIN = 10e-6
# Latency filter: the median of the last 3 round trips to a peer (one slow answer ignored).
VIVALDI_LATENCY_FILTER = 3
# Gravity toward the origin, a pull of (d/150 s)^2: keeps a long-lived cluster from drifting.
VIVALDI_GRAVITY_RHO = 150.0
# A round trip longer than 10 s is not a network's: not a sample (Serf's bound too).
COORD_MAX_RTT = 10.0
# On the wire (core/messages.py Coord) a coordinate is integers: µs, the error in thousandths,
# each within +-100 s (far beyond any real coordinate). Beyond: a malformed datagram.
COORD_WIRE_MAX = 100_000_000
COORD_ERROR_WIRE_MAX = 1500
# Gossip (core/rtt.py): an answer to a probe carries up to this many coordinates of other
# members, each named in at most COORD_NAME_MAX characters (a DNS name's length).
RTT_GOSSIP_MAX = 2
COORD_NAME_MAX = 255
ZERO = 1e-6  # below this (seconds), two points coincide and a distance or error is zero


@dataclass(frozen=True, slots=True)
class Coordinate:
    vec: tuple[float, ...]
    error: float = VIVALDI_ERROR_MAX
    adjustment: float = 0.0
    height: float = VIVALDI_HEIGHT_MIN

    def is_valid(self) -> bool:
        """Finite everywhere, in our number of dimensions."""
        return (
            len(self.vec) == COORD_DIMENSIONS
            and all(math.isfinite(x) for x in self.vec)
            and math.isfinite(self.error)
            and math.isfinite(self.adjustment)
            and math.isfinite(self.height)
        )

    def raw_distance(self, other: Coordinate) -> float:
        """The distance in the space (seconds), without the adjustment terms."""
        return _norm(_diff(self.vec, other.vec)) + self.height + other.height

    def distance(self, other: Coordinate) -> float:
        """The estimated round trip to ``other``, in seconds."""
        raw = self.raw_distance(other)
        adjusted = raw + self.adjustment + other.adjustment
        return adjusted if adjusted > 0 else raw


def origin() -> Coordinate:
    """Where every node starts: the origin, with the largest error."""
    return Coordinate(vec=(0.0,) * COORD_DIMENSIONS)


def _diff(a: tuple[float, ...], b: tuple[float, ...]) -> list[float]:
    return [x - y for x, y in zip(a, b, strict=True)]


def _norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def _apply_force(c: Coordinate, force: float, other: Coordinate, rng: random.Random) -> Coordinate:
    """``c`` pushed ``force`` seconds away from ``other`` (pulled when negative). The height
    takes its share of the force, in proportion to the heights' part of the distance."""
    d = _diff(c.vec, other.vec)
    mag = _norm(d)
    if mag > ZERO:
        unit = [x / mag for x in d]
    else:  # the same point: push in a random direction
        r = [rng.uniform(-0.5, 0.5) for _ in c.vec]
        n = _norm(r) or 1.0
        unit, mag = [x / n for x in r], 0.0
    vec = tuple(x + u * force for x, u in zip(c.vec, unit, strict=True))
    height = c.height
    if mag > ZERO:
        height = max((c.height + other.height) * force / mag + c.height, VIVALDI_HEIGHT_MIN)
    return Coordinate(vec=vec, error=c.error, adjustment=c.adjustment, height=height)


class Vivaldi:
    """One node's coordinate, and what it keeps to update it: the latency filter per peer
    (VIVALDI_LATENCY_FILTER samples each; the caller forgets peers that left) and the
    adjustment window."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.coord = origin()
        self.samples: dict[str, list[float]] = {}
        self.residuals: list[float] = [0.0] * VIVALDI_ADJUSTMENT_WINDOW
        self.residual_at = 0
        self.updates = 0
        self.resets = 0  # our coordinate went invalid (never expected) and was started again

    def forget(self, peer: str) -> None:
        self.samples.pop(peer, None)

    def filtered(self, peer: str, rtt: float) -> float:
        """The median of the last samples to ``peer``, this one included."""
        s = self.samples.setdefault(peer, [])
        s.append(rtt)
        if len(s) > VIVALDI_LATENCY_FILTER:
            del s[0]
        return statistics.median(s)

    def update(self, peer: str, other: Coordinate, rtt: float) -> Coordinate:
        """A round trip of ``rtt`` seconds to ``peer``, whose coordinate is ``other``: move
        ours. The caller has validated both (core/rtt.py); a round trip out of [0, COORD_MAX_RTT]
        raises ValueError."""
        if not (0 <= rtt <= COORD_MAX_RTT) or not other.is_valid():
            raise ValueError(f"unusable sample: rtt {rtt!r}")
        rtt = self.filtered(peer, rtt)
        self._vivaldi(other, rtt)
        self._adjust(other, rtt)
        self._gravity()
        if not self.coord.is_valid():
            self.coord = origin()
            self.resets += 1
        self.updates += 1
        return self.coord

    def _vivaldi(self, other: Coordinate, rtt: float) -> None:
        c = self.coord
        dist = c.distance(other)
        rtt = max(rtt, ZERO)
        wrongness = abs(dist - rtt) / rtt
        total = max(c.error + other.error, ZERO)
        weight = c.error / total
        error = min(VIVALDI_CE * weight * wrongness + c.error * (1 - VIVALDI_CE * weight), VIVALDI_ERROR_MAX)
        moved = _apply_force(c, VIVALDI_CC * weight * (rtt - dist), other, self.rng)
        self.coord = Coordinate(vec=moved.vec, error=error, adjustment=c.adjustment, height=moved.height)

    def _adjust(self, other: Coordinate, rtt: float) -> None:
        c = self.coord
        self.residuals[self.residual_at] = rtt - c.raw_distance(other)
        self.residual_at = (self.residual_at + 1) % len(self.residuals)
        adjustment = sum(self.residuals) / (2 * len(self.residuals))
        self.coord = Coordinate(vec=c.vec, error=c.error, adjustment=adjustment, height=c.height)

    def _gravity(self) -> None:
        o = origin()
        dist = self.coord.distance(o)
        force = -((dist / VIVALDI_GRAVITY_RHO) ** 2)
        self.coord = _apply_force(self.coord, force, o, self.rng)
