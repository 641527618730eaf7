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

A member's tags (core/tags.py) come with its alive news and change only with a higher
incarnation, so these rules order tag changes too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from enum import StrEnum

from chatterd.core.config import FORGOTTEN_MAX
from chatterd.core.digest import Digest, bucket_of, signature


class MemberState(StrEnum):
    """A member's state. A str: it compares equal to, and encodes as, its wire value."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


State = MemberState
ALIVE, SUSPECT, DEAD, LEFT = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT
LIVE = (ALIVE, SUSPECT)  # members that take part: in the ring, monitored, counted


@dataclass(slots=True)
class Member:
    name: str
    id: str
    addr: tuple[str, int]
    inc: int
    state: State
    since: float  # local monotonic time of the last state change
    last_heard: float | None = None  # local time of the last datagram straight from it
    bucket: int = field(default=-1)  # digest bucket, from the name
    shared: bool = False  # owned by several tables (a simulation's bootstrap): copy before changing
    tags: dict[str, str] = field(default_factory=dict)  # replaced, never changed in place

    def signature(self) -> int:
        if self.tags:
            tags = sorted(self.tags.items())
            return signature(self.name, self.id, self.addr[0], self.addr[1], self.inc, self.state, tags)
        return signature(self.name, self.id, self.addr[0], self.addr[1], self.inc, self.state)


@dataclass(frozen=True, slots=True)
class Transition:
    member: Member
    old: State | None  # None: the member was unknown until now
    new: State
    updated: bool = False  # id, address or tags changed


class MemberTable:
    """Members by name. Every change goes through these methods, which keep ``digest``
    (the bucket hashes anti-entropy compares) in step with the table."""

    def __init__(self, digest: Digest | None = None) -> None:
        self.members: dict[str, Member] = {}
        self.digest = digest or Digest()
        self._addrs: Counter[tuple[str, int]] | None = None  # records per address, built when first asked
        self._names: dict[tuple[str, int], str] | None = None  # the latest member at each address, likewise
        # Members reaped here → (their last incarnation, when), oldest first, kept for one more
        # reap_after: a peer that has not reaped them yet sends them back as history (dead or
        # left, core/state.py), and taking that back would keep them for another reap_after,
        # and pass them on again. Bounded: at most FORGOTTEN_MAX names.
        self.forgotten: dict[str, tuple[int, float]] = {}

    def has_addr(self, addr: tuple[str, int]) -> bool:
        """Does any record (any state: a dead member may come back) have this address?"""
        if self._addrs is None:
            self._addrs = Counter(m.addr for m in self.members.values())
        return self._addrs[addr] > 0

    def name_at(self, addr: tuple[str, int]) -> str | None:
        """The member at this address (the latest to have it), or None."""
        if self._names is None:
            self._names = {m.addr: m.name for m in self.members.values()}
        return self._names.get(addr)

    def _addr_moved(self, old: tuple[str, int] | None, new: tuple[str, int] | None, name: str = "") -> None:
        names = self._names
        if names is not None and old != new:
            if old is not None and names.get(old) == name:
                del names[old]
            if new is not None:
                names[new] = name
        index = self._addrs
        if index is None or old == new:
            return
        if old is not None:
            index[old] -= 1
            if index[old] <= 0:
                del index[old]
        if new is not None:
            index[new] += 1

    def adopt(self, members: dict[str, Member], hashes: list[int]) -> None:
        """Start from a converged view shared with other tables (the simulator's bootstrap of
        thousands of nodes): records are copied only when this table changes them."""
        for m in members.values():
            m.shared = True
        self.members = dict(members)
        self._addrs = self._names = None
        self.digest.hashes[:] = hashes

    def _own(self, m: Member) -> Member:
        if m.shared:
            m = replace(m, shared=False)
            self.members[m.name] = m
        return m

    def heard(self, m: Member, now: float) -> Member:
        """A datagram came straight from m."""
        m = self._own(m)
        m.last_heard = now
        return m

    def __len__(self) -> int:
        return len(self.members)

    def get(self, name: str) -> Member | None:
        return self.members.get(name)

    def count(self, *states: str) -> int:
        return sum(1 for m in self.members.values() if m.state in states)

    def _add(self, m: Member) -> Member:
        m.bucket = bucket_of(m.name)
        self.members[m.name] = m
        self._addr_moved(None, m.addr, m.name)
        self.digest.update(m.bucket, 0, m.signature())
        return m

    def insert(
        self, name: str, id: str, addr: tuple[str, int], inc: int, state: State, now: float, tags: dict[str, str]
    ) -> Member:
        """Record a member we only know from history (dead or left before we joined)."""
        return self._add(Member(name, id, addr, inc, MemberState(state), now, tags=tags))

    def set(
        self,
        m: Member,
        now: float,
        *,
        inc: int | None = None,
        state: State | None = None,
        tags: dict[str, str] | None = None,
    ) -> Member:
        """Change a member (our own record: refutations, leaving, new tags)."""
        m = self._own(m)
        old = m.signature()
        if inc is not None:
            m.inc = inc
        if tags is not None:
            m.tags = tags
        if state is not None and state != m.state:
            m.state, m.since = state, now
        self.digest.update(m.bucket, old, m.signature())
        return m

    def apply_alive(
        self, name: str, id: str, addr: tuple[str, int], inc: int, now: float, tags: dict[str, str] | None = None
    ) -> Transition | None:
        tags = {} if tags is None else tags
        m = self.members.get(name)
        if m is None:
            m = self._add(Member(name, id, addr, inc, ALIVE, now, tags=tags))
            return Transition(m, None, ALIVE)
        if inc <= m.inc:
            return None
        m = self._own(m)
        old_sig = m.signature()
        old = m.state
        updated = (m.id, m.addr, m.tags) != (id, addr, tags)
        self._addr_moved(m.addr, addr, name)
        m.id, m.addr, m.inc, m.tags = id, addr, inc, tags
        if old != ALIVE:
            m.state, m.since = ALIVE, now
        self.digest.update(m.bucket, old_sig, m.signature())
        # A newer incarnation of a live member is news to pass on (it may refute a suspicion
        # others hold) even when there is no event to report here.
        return Transition(m, old, ALIVE, updated)

    def apply_suspect(self, name: str, inc: int, now: float) -> Transition | None:
        m = self.members.get(name)
        if m is None:
            return None
        if (m.state == ALIVE and inc >= m.inc) or (m.state == SUSPECT and inc > m.inc):
            old = m.state
            m = self.set(m, now, inc=inc, state=SUSPECT)
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
        m = self.set(m, now, inc=inc, state=state)
        return Transition(m, old, state)

    def erase(self, name: str) -> Member | None:
        """Forget one member now (force-leave --prune), whatever its state; its record."""
        m = self.members.pop(name, None)
        if m is not None:
            self._addr_moved(m.addr, None, name)
            self.digest.update(m.bucket, m.signature(), 0)
        return m

    def reap(self, now: float, after: float) -> list[str]:
        """Forget members dead or left for longer than ``after`` seconds (and, ``after`` later,
        that they were forgotten)."""
        forgotten = self.forgotten
        while forgotten and now - next(iter(forgotten.values()))[1] >= after:
            del forgotten[next(iter(forgotten))]
        gone = [n for n, m in self.members.items() if m.state in (DEAD, LEFT) and now - m.since >= after]
        for n in gone:
            m = self.members.pop(n)
            self._addr_moved(m.addr, None, n)
            self.digest.update(m.bucket, m.signature(), 0)
            forgotten.pop(n, None)
            forgotten[n] = (m.inc, now)
        while len(forgotten) > FORGOTTEN_MAX:
            del forgotten[next(iter(forgotten))]
        return gone

    def forgot(self, name: str, inc: int) -> bool:
        """Did we reap this member lately, at this incarnation or a later one?"""
        seen = self.forgotten.get(name)
        return seen is not None and inc <= seen[0]
