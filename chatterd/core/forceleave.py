"""Force-leave, as ``serf force-leave``: an operator moves a failed member to ``left``
cluster-wide, so that nobody tries to reconnect to it and its roles go to the others; with
``prune`` the member is also erased from every member table at once instead of at reaping.

The news is the cluster's own ``Left`` message (core/messages.py), spread by gossip like any
member news, at the incarnation the member was declared dead at: a member that is in fact
alive accepts it as news of itself and refutes it at a higher incarnation, as it refutes a
false death. So a live member cannot be force-left: the asking node refuses when it holds
the member alive or suspect (:class:`ForceLeaveError`), and a node that holds it alive
applies the news as a plain leave, which the member refutes.

``prune`` (``Left.prune``) is only accepted from the address of a live member (a sealed
cluster authenticates every datagram as well), only for a member held ``dead`` or ``left``,
and only at the incarnation held or above. An erased member leaves a tombstone (its
incarnation) for ``reap_after`` seconds, at most MAX_PRUNED of them: news of the member at or
below that incarnation (an old Alive still gossiped, a push-pull record from a node that
missed the prune) is dropped and counted (``pruned_ignored``), and the sender of a record gets
the prune back, so it erases the member too. A member that comes back (a restart: a higher
incarnation) is let in again and its tombstone ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatterd.core import wire
from chatterd.core.config import MAX_PRUNED
from chatterd.core.context import Context, Part
from chatterd.core.gossip import Gossip
from chatterd.core.membership import DEAD, LEFT, LIVE
from chatterd.core.state import MemberNews

Addr = tuple[str, int]


class ForceLeaveError(ValueError):
    """A force-leave refused: ``unknown`` (no such member here) or ``live`` (it would refute)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ForceLeaveResult:
    node: str
    before: str  # its state here before: dead or left
    left: bool  # moved to left here now (False: it had left already)
    pruned: bool  # erased from the member table


class ForceLeave(Part):
    def __init__(self, ctx: Context, news: MemberNews, gossip: Gossip) -> None:
        super().__init__(ctx)
        self.news = news
        self.gossip = gossip
        self.tombstones: dict[str, tuple[int, float]] = {}  # erased member → (incarnation, until), oldest first
        news.buried = self.buried

    def request(self, name: str, prune: bool, now: float) -> ForceLeaveResult:
        """The operator's force-leave of ``name``, from this node. Raises ForceLeaveError."""
        if name == self.local.name:
            raise ForceLeaveError(f"{name} is this node: use chatterd leave to leave gracefully", "live")
        m = self.table.get(name)
        if m is None:
            raise ForceLeaveError(f"no member {name!r} in this node's table (chatterd members lists them)", "unknown")
        if m.state in LIVE:
            raise ForceLeaveError(
                f"{name} is {m.state}: a live member cannot be force-left (it would refute); "
                f"stop it, or run chatterd leave on it",
                "live",
            )
        before = str(m.state)
        msg = wire.Left(node=name, inc=m.inc, prune=prune)
        left = self._leave(msg, now)
        if prune:
            self._erase(name, m.inc, now)
        self.gossip.broadcast("m:" + name, msg, now)
        self.fx.log_members.info("member_force_left", node=name, inc=m.inc, before=before, prune=prune)
        return ForceLeaveResult(name, before, left, prune)

    def on_left(self, msg: wire.Left, src: Addr, now: float) -> None:
        """A Left, standalone or piggybacked: a prune is checked here, the rest is member news."""
        if not msg.prune:
            self.news.on_left(msg, now, src)
            return
        sender = self.table.name_at(src)
        from_member = sender is not None and (s := self.table.get(sender)) is not None and s.state in LIVE
        if not from_member:
            self.fx.drop("prune_stranger")
            return
        m = self.table.get(msg.node)
        if msg.node == self.local.name or (m is not None and m.state in LIVE):
            self.news.on_left(wire.Left(node=msg.node, inc=msg.inc), now, src)  # a live member refutes it
            return
        if m is None or msg.inc < m.inc or not self.news.plausible(msg.node, msg.inc):
            return  # unknown here (or erased already), news of an earlier life, or a forgery
        self._leave(msg, now)
        self._erase(msg.node, msg.inc, now)
        self.gossip.broadcast("m:" + msg.node, msg, now)

    def buried(self, node: str, inc: int, src: Addr | None, now: float) -> bool:
        """Is this news of an erased member at or below its tombstone? Then it is dropped, and
        ``src`` (a node that still holds the member) is told of the prune."""
        tomb = self.tombstones.get(node)
        if tomb is None:
            return False
        tomb_inc, until = tomb
        if now >= until or inc > tomb_inc:
            del self.tombstones[node]  # expired, or the member is back: a new life
            return False
        self.fx.stats["pruned_ignored"] += 1
        if src is not None and src != self.local.addr:
            self.fx.send_msg(wire.Left(node=node, inc=tomb_inc, prune=True), src)
        return True

    def _leave(self, msg: wire.Left, now: float) -> bool:
        t = self.table.apply_left(msg.node, msg.inc, now)
        self.news.apply(t, now)
        return t is not None

    def _erase(self, name: str, inc: int, now: float) -> None:
        m = self.table.get(name)
        if m is None or m.state not in (DEAD, LEFT):
            return
        self.table.erase(name)
        self.news.dead.pop(name, None)
        self.tombstones.pop(name, None)
        self.tombstones[name] = (inc, now + self.cfg.reap_after)
        while len(self.tombstones) > MAX_PRUNED:
            del self.tombstones[next(iter(self.tombstones))]
        self.fx.stats["members_pruned"] += 1
        self.fx.log_members.info("member_pruned", node=name, inc=inc)
