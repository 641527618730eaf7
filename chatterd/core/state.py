"""Member news: alive, suspect, dead and left messages applied to the member table, the
node's refutations of news about itself, and the bookkeeping after every transition.

The rules for which news replaces which are the table's (core/membership.py). Here each
piece of news that changed something is passed on by gossip, moves the member on the ring
(so monitors are reassigned), ends or starts its suspicion, tells the election that the
candidates may have changed, and becomes a :class:`MemberEvent` for the shell.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from chatterd.core import tags, wire
from chatterd.core.bounds import saturate
from chatterd.core.config import FIRST_SIGHT_MAX, PLAUSIBLE_STEP
from chatterd.core.context import Context, Part
from chatterd.core.detector import Detector
from chatterd.core.events import MemberEvent
from chatterd.core.gossip import Gossip
from chatterd.core.local import check_tags
from chatterd.core.membership import ALIVE, DEAD, LEFT, LIVE, SUSPECT, Member, MemberState, Transition

Addr = tuple[str, int]

# Member transitions (old state, new state) → event kind.
EVENT_KIND: dict[tuple[MemberState | None, MemberState], str] = {
    (None, ALIVE): "member-join",
    (LEFT, ALIVE): "member-join",
    (DEAD, ALIVE): "member-recover",
    (SUSPECT, ALIVE): "member-alive",
    (ALIVE, SUSPECT): "member-suspect",
    (SUSPECT, SUSPECT): "member-suspect",
    (ALIVE, DEAD): "member-failed",
    (SUSPECT, DEAD): "member-failed",
    (ALIVE, LEFT): "member-leave",
    (SUSPECT, LEFT): "member-leave",
    (DEAD, LEFT): "member-leave",
}


class MemberNews(Part):
    def __init__(self, ctx: Context, detector: Detector, gossip: Gossip) -> None:
        super().__init__(ctx)
        self.detector = detector
        self.gossip = gossip
        self.dead: dict[str, None] = {}  # members we believe dead (reconnect candidates), in order
        # Called with each member whose state or tags changed (the election's candidates).
        self.on_change: Callable[[Member], None] = lambda m: None
        # (node, inc, source, now): news of a member erased by force-leave --prune, to drop
        # (core/forceleave.py).
        self.buried: Callable[[str, int, Addr | None, float], bool] = lambda node, inc, src, now: False

    # ------------------------------------------------------------------ news

    def plausible(self, node: str, inc: int) -> bool:
        """Is news of ``node`` at incarnation ``inc`` believable? Not if it would raise a
        known member's incarnation by more than PLAUSIBLE_STEP, or if a member we do not know
        yet comes in above FIRST_SIGHT_MAX (core/config.py); such news is dropped and counted
        (malformed_implausible_inc).

        Why this keeps every node able to refute: only a node raises its own incarnation, so
        what anyone honestly knows of us is at most our own incarnation; news about us that
        another node accepted is at most its knowledge + PLAUSIBLE_STEP, which we accept too
        (ourselves being the member we know best), and we refute it at one above, which that
        node accepts in turn. The forged news we drop, nobody who knows us took either. Each
        accepted forgery raises an incarnation by PLAUSIBLE_STEP at most, from at most
        FIRST_SIGHT_MAX, so 2^62 of room is left below the wire's 2^63-1: about 2^30 forged
        datagrams to exhaust it. Past that the refutation saturates (it still encodes)."""
        known = self.table.members.get(node)
        limit = FIRST_SIGHT_MAX if known is None else known.inc + PLAUSIBLE_STEP
        if inc <= limit:
            return True
        self.fx.drop("implausible_inc")
        return False

    def on_alive(self, msg: wire.Alive | wire.Join, now: float, src: Addr | None = None) -> None:
        me = self.local
        if not self.plausible(msg.node, msg.inc):
            return
        if msg.node == me.name:
            conflict = msg.id != me.id
            if (msg.inc > me.inc or (conflict and msg.inc == me.inc)) and not me.leaving:
                if conflict:
                    self.fx.log_members.warning("name_conflict", node=msg.node, other_id=msg.id, other_addr=msg.addr)
                self.refute(msg.inc, now, src)
            return
        known = self.table.members.get(msg.node)
        if known is not None and msg.inc <= known.inc:
            return  # old news (the common case): skip parsing
        if known is None and self.buried(msg.node, msg.inc, src, now):
            return
        try:
            addr = wire.parse_addr(msg.addr)
        except ValueError:
            self.fx.drop("addr")
            return
        old_addr = known.addr if known is not None else None
        t = self.table.apply_alive(msg.node, msg.id, addr, msg.inc, now, msg.tags)
        if t is not None:
            self.apply(t, now)
            alive = wire.Alive(node=msg.node, id=msg.id, addr=msg.addr, inc=msg.inc, tags=msg.tags)
            self.gossip.broadcast("m:" + msg.node, alive, now)
            if old_addr is not None and old_addr != addr:
                # A member moved (DHCP, a rescheduled pod) or someone claims its name from
                # elsewhere: tell the old address, where a member still there refutes at once.
                self.fx.stats["addr_changes"] += 1
                self.fx.send_msg(alive, old_addr)

    def set_own_tags(self, new: Mapping[str, str], now: float) -> bool:
        """Our tags change (raises TagsError). Like a refutation, the change goes out as Alive
        at a higher incarnation; every node, this one included, reports member-update."""
        me = self.local
        if me.leaving:
            raise tags.TagsError("the node is leaving")
        checked = check_tags(self.cfg, me.name, new)
        if checked == me.tags:
            return False
        me.tags = checked
        me.inc = saturate(me.inc + 1)
        member = self.table.set(self.table.members[me.name], now, inc=me.inc, tags=checked)
        self.gossip.broadcast("m:" + me.name, me.alive_msg(), now)
        self.apply(Transition(member, ALIVE, ALIVE, updated=True), now)
        self.fx.log_members.info("tags_changed", inc=me.inc, tags=checked)
        return True

    def _handled_as_own(self, node: str, inc: int, now: float, src: Addr | None) -> bool:
        """Implausible news (dropped), or an accusation of ourselves (refuted): nothing more to do."""
        if not self.plausible(node, inc):
            return True
        if node != self.local.name:
            return False
        me = self.local
        if me.leaving:
            return True
        if inc >= me.inc:
            self.refute(inc, now, src)
        else:
            # Older than what we already announced (a paused node finds a backlog of them):
            # no new incarnation, just our current one to the accuser, which has not heard it.
            self.fx.stats["stale_accusations"] += 1
            if src is not None:
                self.fx.send_msg(me.alive_msg(), src)
        return True

    def on_suspect(self, msg: wire.Suspect, now: float, src: Addr | None = None, by: str | None = None) -> None:
        if self._handled_as_own(msg.node, msg.inc, now, src):
            return
        accuser = msg.by if by is None else by
        t = self.table.apply_suspect(msg.node, msg.inc, now)
        if t is not None:
            self.detector.suspect(msg.node, msg.inc, accuser or None, now)
            self.apply(t, now, by=accuser)
            self.gossip.broadcast(f"s:{msg.node}:{accuser}", msg, now)
        elif self.detector.confirm(msg.node, msg.inc, accuser or None):
            self.fx.stats["suspicion_confirmations"] += 1
            self.gossip.broadcast(f"s:{msg.node}:{accuser}", msg, now)

    def on_dead(self, msg: wire.Dead, now: float, src: Addr | None = None) -> None:
        if self._handled_as_own(msg.node, msg.inc, now, src):
            return
        t = self.table.apply_dead(msg.node, msg.inc, now)
        if t is not None:
            self.apply(t, now, by=msg.by)
            self.gossip.broadcast("m:" + msg.node, msg, now)

    def on_left(self, msg: wire.Left, now: float, src: Addr | None = None) -> None:
        if not self.plausible(msg.node, msg.inc):
            return
        if msg.node == self.local.name:
            if not self.local.leaving and msg.inc >= self.local.inc:
                self.refute(msg.inc, now, src)  # news of a previous life's leave
            return
        t = self.table.apply_left(msg.node, msg.inc, now)
        if t is not None:
            self.apply(t, now)
            self.gossip.broadcast("m:" + msg.node, msg, now)

    def on_record(self, rec: wire.MemberRecord, now: float, src: Addr) -> None:
        """A member record from a push-pull State chunk."""
        m = self.table.members.get(rec.node)
        if m is not None and (rec.inc < m.inc or (rec.inc == m.inc and rec.state == m.state)):
            return  # old news: the common case, kept cheap
        if not self.plausible(rec.node, rec.inc):
            return
        if rec.state == ALIVE:
            self.on_alive(_alive_of(rec), now, src)
            return
        if rec.node == self.local.name:
            if rec.inc >= self.local.inc and not self.local.leaving:
                self.refute(rec.inc, now, src)
            return
        if m is None:
            if self.buried(rec.node, rec.inc, src, now):
                return
            try:
                addr = wire.parse_addr(rec.addr)
            except ValueError:
                return
            if rec.state in (DEAD, LEFT):
                if self.table.forgot(rec.node, rec.inc):
                    return  # we reaped it: a peer that has not yet must not bring it back
                # History from before we joined: remember it quietly, no events.
                self.table.insert(rec.node, rec.id, addr, rec.inc, MemberState(rec.state), now, rec.tags)
                return
            self.on_alive(_alive_of(rec), now, src)
        if rec.state == SUSPECT:
            self.on_suspect(wire.Suspect(node=rec.node, inc=rec.inc, by=""), now, src, by="")
        elif rec.state == DEAD:
            self.on_dead(wire.Dead(node=rec.node, inc=rec.inc, by=""), now, src)
        else:
            self.on_left(wire.Left(node=rec.node, inc=rec.inc), now, src)

    def refute(self, inc: int, now: float, src: Addr | None) -> None:
        me = self.local
        me.inc = saturate(max(me.inc, inc) + 1)
        self.table.set(self.table.members[me.name], now, inc=me.inc)
        self.fx.stats["refutations"] += 1
        alive = me.alive_msg()
        self.gossip.broadcast("m:" + me.name, alive, now)
        if src is not None:
            self.fx.send_msg(alive, src)
        self.fx.log_members.info("refuted", inc=me.inc)

    def heard(self, sender: str, now: float) -> None:
        """A datagram came from member ``sender``: if we believe it suspect, dead or left, tell
        it what we believe, so that it refutes (a member that is leaving does not; one that was
        force-left or whose leave was forged does, within a heartbeat)."""
        m = self.table.get(sender)
        if m is None:
            return
        m = self.table.heard(m, now)
        self.detector.heard(sender, now)
        if m.state in (SUSPECT, DEAD, LEFT) and not self.local.leaving:
            self.fx.send_msg(self.record_msg(m), m.addr)

    # ------------------------------------------------------------------ after a change

    def apply(self, t: Transition | None, now: float, by: str | None = None) -> None:
        """Bookkeeping after a member changed state: ring, monitors, suspicions, events."""
        if t is None:
            return
        m = t.member
        self.on_change(m)
        changed = self.ring.add(m.name) if t.new in LIVE else self.ring.remove(m.name)
        last = self.detector.member_changed(m.name, t.new, changed, now)
        if t.new == DEAD:
            self.dead[m.name] = None
        else:
            self.dead.pop(m.name, None)
        kind = EVENT_KIND.get((t.old, t.new))
        if t.updated and t.old == ALIVE:
            kind = "member-update"
        if kind is None:
            return
        after = None
        if t.new == DEAD:
            self.fx.stats["deaths"] += 1
            after = None if last is None else round(now - last, 3)
        elif t.new == SUSPECT:
            self.fx.stats["suspicions"] += 1
        self.fx.emit(
            MemberEvent(kind, m.name, m.id, wire.format_addr(m.addr), m.inc, m.state, by=by, after_s=after, tags=m.tags)
        )

    def record_msg(self, m: Member) -> wire.Message:
        """What we believe of ``m``, as the message that would have told us."""
        addr = wire.format_addr(m.addr)
        if m.state == ALIVE:
            return wire.Alive(node=m.name, id=m.id, addr=addr, inc=m.inc, tags=m.tags)
        if m.state == SUSPECT:
            return wire.Suspect(node=m.name, inc=m.inc, by=self.local.name)
        if m.state == DEAD:
            return wire.Dead(node=m.name, inc=m.inc, by=self.local.name)
        return wire.Left(node=m.name, inc=m.inc)


def _alive_of(rec: wire.MemberRecord) -> wire.Alive:
    return wire.Alive(node=rec.node, id=rec.id, addr=rec.addr, inc=rec.inc, tags=rec.tags)
