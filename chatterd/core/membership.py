"""The member table and the rules for changing a member's state.

States and incarnations follow SWIM: only the member itself raises its incarnation (to
refute a suspicion or to announce a restart). For news about the same member:

    alive(i)    replaces alive(j) | suspect(j) | dead(j) | left(j)   when i > j
    suspect(i)  replaces alive(j)                                     when i >= j
                replaces suspect(j)                                   when i > j
    dead(i)     replaces alive(j) | suspect(j)                        when i >= j
    left(i)     replaces alive(j) | suspect(j) | dead(j)              when i >= j

Each ``apply_*`` method returns the resulting transition (old state, new state) when the
news changed something, so the caller spreads it on, or None when it was old news.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

State = Literal["alive", "suspect", "dead", "left"]
ALIVE, SUSPECT, DEAD, LEFT = "alive", "suspect", "dead", "left"


@dataclass(slots=True)
class Member:
    name: str
    id: str
    addr: tuple[str, int]
    inc: int
    state: State
    since: float  # local monotonic time of the last state change
    last_heard: float | None = None  # local time of the last datagram straight from it


@dataclass(frozen=True, slots=True)
class Transition:
    member: Member
    old: State | None  # None: the member was unknown until now
    new: State
    updated: bool = False  # id or address changed


class MemberTable:
    def __init__(self) -> None:
        self.members: dict[str, Member] = {}

    def __len__(self) -> int:
        return len(self.members)

    def get(self, name: str) -> Member | None:
        return self.members.get(name)

    def count(self, *states: str) -> int:
        return sum(1 for m in self.members.values() if m.state in states)

    def insert(self, name: str, id: str, addr: tuple[str, int], inc: int, state: State, now: float) -> Member:
        """Record a member we only know from history (dead or left before we joined)."""
        m = Member(name, id, addr, inc, state, now)
        self.members[name] = m
        return m

    def apply_alive(self, name: str, id: str, addr: tuple[str, int], inc: int, now: float) -> Transition | None:
        m = self.members.get(name)
        if m is None:
            m = Member(name, id, addr, inc, ALIVE, now)
            self.members[name] = m
            return Transition(m, None, ALIVE)
        if inc <= m.inc:
            return None
        old = m.state
        updated = (m.id, m.addr) != (id, addr)
        m.id, m.addr, m.inc = id, addr, inc
        if old != ALIVE:
            m.state, m.since = ALIVE, now
        elif not updated:
            return None  # a newer incarnation of a live member: nothing to report
        return Transition(m, old, ALIVE, updated)

    def apply_suspect(self, name: str, inc: int, now: float) -> Transition | None:
        m = self.members.get(name)
        if m is None:
            return None
        if (m.state == ALIVE and inc >= m.inc) or (m.state == SUSPECT and inc > m.inc):
            old = m.state
            m.inc = inc
            if old != SUSPECT:
                m.state, m.since = SUSPECT, now
            return Transition(m, old, SUSPECT)
        return None

    def apply_dead(self, name: str, inc: int, now: float) -> Transition | None:
        return self._terminal(name, inc, DEAD, (ALIVE, SUSPECT), now)

    def apply_left(self, name: str, inc: int, now: float) -> Transition | None:
        return self._terminal(name, inc, LEFT, (ALIVE, SUSPECT, DEAD), now)

    def _terminal(self, name: str, inc: int, state: State, replaces: tuple[str, ...], now: float) -> Transition | None:
        m = self.members.get(name)
        if m is None or inc < m.inc or m.state not in replaces:
            return None
        old = m.state
        m.inc, m.state, m.since = inc, state, now
        return Transition(m, old, state)

    def reap(self, now: float, after: float) -> list[str]:
        """Forget members dead or left for longer than ``after`` seconds."""
        gone = [n for n, m in self.members.items() if m.state in (DEAD, LEFT) and now - m.since >= after]
        for n in gone:
            del self.members[n]
        return gone
