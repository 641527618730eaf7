"""Suspicion timers that shorten as independent accusers agree (Lifeguard, Dadgar et al. 2018).

A suspected member is declared dead when its timer runs out. The timeout starts at
``suspicion_max`` with one accuser and falls logarithmically to ``suspicion_min`` once every
expected accuser (each monitor of the member) has reported it: one monitor with a lossy link
cannot kill a node quickly, while a real crash, seen by all its monitors at once, is
declared in ``suspect_after + suspicion_min``.
"""

from __future__ import annotations

import math


def timeout(confirmations: int, expected: int, t_min: float, t_max: float) -> float:
    if expected <= 1 or confirmations >= expected:
        return t_min
    c = max(confirmations, 1)
    frac = math.log(c) / math.log(expected)
    return max(t_min, t_max - (t_max - t_min) * frac)


class Suspicion:
    __slots__ = ("accusers", "expected", "inc", "start", "t_max", "t_min")

    def __init__(self, inc: int, start: float, expected: int, t_min: float, t_max: float) -> None:
        self.inc = inc
        self.start = start
        self.expected = expected
        self.accusers: set[str] = set()
        self.t_min = t_min
        self.t_max = t_max

    def confirm(self, accuser: str | None) -> bool:
        """Record an accuser. True if it is a new, independent one."""
        if accuser is None or accuser in self.accusers:
            return False
        self.accusers.add(accuser)
        return True

    @property
    def deadline(self) -> float:
        return self.start + timeout(len(self.accusers), self.expected, self.t_min, self.t_max)

    def delay(self, seconds: float) -> None:
        """Push the deadline back (our own timers ran late: local health)."""
        self.start += seconds
