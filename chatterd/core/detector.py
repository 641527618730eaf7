"""Failure detection: heartbeats to ring monitors, suspicion, and local health.

Each node sends a heartbeat every ``heartbeat_interval`` to its ``monitors`` successors on
the hash ring (core/ring.py), and watches its predecessors. A monitor that hears nothing
from a member for ``suspect_after`` (longer on a slow link: ``slack``, from the network
coordinates of core/rtt.py) accuses it (Suspect); the member is declared dead when
its suspicion timer (core/suspicion.py) runs out, sooner as more monitors agree (Lifeguard).
Local health: when our own timers fire late we were starved (CPU, GC, a paused process), and
the stall is not counted against the members we watch.

The detector decides *that* a member is suspected or dead; applying the news to the member
table is the state module's job, reached through the ``accuse`` and ``declare_dead`` hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chatterd.core import wire
from chatterd.core.context import Context, Part
from chatterd.core.membership import ALIVE, SUSPECT, MemberState
from chatterd.core.probe import Prober
from chatterd.core.rtt import RoundTrips
from chatterd.core.suspicion import Suspicion

Addr = tuple[str, int]


class Detector(Part):
    def __init__(self, ctx: Context, now: float) -> None:
        super().__init__(ctx)
        cfg, local = ctx.cfg, ctx.local
        self.suspicions: dict[str, Suspicion] = {}
        self.monitored: dict[str, float] = {}  # members we monitor → when we last heard them
        # Heartbeats go out on a grid shared by every node (multiples of the interval in wall
        # time): a node's own sends and its monitored peers' heartbeats then arrive together,
        # and an idle node wakes up about twice per interval instead of 1 + monitors times.
        hb = cfg.heartbeat_interval
        self.next_hb = now + hb - local.wall(now) % hb
        self.expected_wake: float | None = None
        self.starved_at: float | None = None  # when our own timers last ran late (local health)
        self.accuse: Callable[[wire.Suspect, float], None] = lambda msg, now: None
        self.declare_dead: Callable[[wire.Dead, float], None] = lambda msg, now: None
        self.woke: Callable[[float], None] = lambda now: None  # after a long stall: sync at once
        # Probes before suspecting (core/probe.py), with Config.probe_before_suspect.
        self.prober = Prober(ctx)
        self.probing = cfg.probe_before_suspect
        # Round trips and network coordinates (core/rtt.py), with Config.coordinates; from
        # them, the extra silence allowed to a member on a slow link (RoundTrips.slack): 0 on
        # a LAN, never negative (never sooner).
        self.rtt = RoundTrips(ctx, now, lambda: self.monitored)
        self.slack: Callable[[str], float] = self.rtt.slack if cfg.coordinates else lambda name: 0.0

    def handlers(self) -> dict[type, Callable[[Any, Addr, float], None]]:
        """The messages the detector handles, for the node's dispatch table."""
        p, rtt = self.prober, self.rtt
        return {wire.Ping: p.on_ping, wire.PingReq: p.on_ping_req, wire.Vouch: self.on_vouch, **rtt.handlers()}

    # ------------------------------------------------------------------ timers

    def deadline(self) -> float:
        d = min(self.next_hb, self.rtt.deadline())
        after, slack = self.cfg.suspect_after, self.slack
        for name, last in self.monitored.items():
            if self.may_accuse(name):
                d = min(d, last + after + slack(name))
                if self.probing:
                    d = min(d, self.prober.due(name, last))
        for s in self.suspicions.values():
            d = min(d, s.deadline)
        return d

    def check_lateness(self, now: float) -> None:
        if self.expected_wake is not None:
            late = now - self.expected_wake
            if late > self.cfg.max_timer_lateness:
                self.starved_at = now
                self._starved(late)
                if late >= self.cfg.suspect_after:
                    # Long enough to have been declared dead, and to have missed the news
                    # gossiped meanwhile (a role claimed by another): fetch it now rather
                    # than at the next push-pull, up to pushpull_interval away.
                    self.woke(now)

    def heartbeat_due(self, now: float) -> None:
        """Send the heartbeats if they are due."""
        if now < self.next_hb:
            return
        data = wire.encode([wire.Heartbeat(inc=self.local.inc)], self.local.name)
        for name in self.ring.successors(self.local.name, self.cfg.monitors):
            self.fx.send(data, self.table.members[name].addr)
        hb = self.cfg.heartbeat_interval
        self.next_hb += hb
        if self.next_hb <= now:
            # We were stalled for more than an interval (a busy start-up, a paused process):
            # back onto the shared grid, so that our sends and our peers' heartbeats arrive
            # together again. Staying off it would cost a wake-up per monitored peer.
            self.next_hb = now + hb - self.local.wall(now) % hb
            if self.next_hb - now < 1e-3:  # on a grid point already (rounding): the next one
                self.next_hb += hb

    def tick(self, now: float) -> None:
        """Accuse the silent members we watch; declare dead those whose suspicion ran out."""
        self.rtt.tick(now)
        after, slack = self.cfg.suspect_after, self.slack
        for name, last in list(self.monitored.items()):
            if last + after + slack(name) <= now and self.may_accuse(name):  # the same sum as deadline()
                m = self.table.members[name]
                msg = wire.Suspect(node=name, inc=m.inc, by=self.local.name)
                self.fx.log_members.info("member_suspected", node=name, silent_s=round(now - last, 3))
                self.accuse(msg, now)
                self.fx.send_msg(msg, m.addr)  # if it is alive after all, it refutes at once
                self.prober.stop(name)
            elif self.probing and now >= self.prober.due(name, last) and self.may_accuse(name):
                self.prober.probe(name, now)
        for name, s in list(self.suspicions.items()):
            if now >= s.deadline:
                m = self.table.members[name]
                self.declare_dead(wire.Dead(node=name, inc=m.inc, by=self.local.name), now)

    def may_accuse(self, name: str) -> bool:
        """A monitor accuses a silent member once: when it is alive, or suspected by others
        (then our accusation is an independent confirmation that shortens the timeout)."""
        state = self.table.members[name].state
        if state == ALIVE:
            return True
        if state == SUSPECT:
            s = self.suspicions.get(name)
            return s is None or self.local.name not in s.accusers
        return False

    def _starved(self, late: float) -> None:
        """Our own timers ran late: do not blame the others for the time we lost."""
        self.fx.stats["starved"] += 1
        for name in self.monitored:
            self.monitored[name] += late
        for s in self.suspicions.values():
            s.delay(late)
        self.prober.delay(late)
        self.fx.log_members.warning("timers_late", late_s=round(late, 3))

    # ------------------------------------------------------------------ news from outside

    def heard(self, name: str, now: float) -> None:
        """A datagram came straight from ``name``."""
        if name in self.monitored:
            self.monitored[name] = now
            self.prober.stop(name)
        self.prober.heard(name, now)

    def on_vouch(self, msg: wire.Vouch, src: tuple[str, int], now: float) -> None:
        """Another member heard ``msg.node`` for us (an answer to our PingReq)."""
        heard = self.prober.vouched(msg, src, now)
        last = self.monitored.get(msg.node)
        if heard is not None and last is not None and heard > last:
            self.monitored[msg.node] = heard
            self.prober.stop(msg.node)  # probing starts again probe_after after ``heard``

    def refresh(self, now: float) -> None:
        """Watch our ring predecessors (after the ring changed)."""
        preds = self.ring.predecessors(self.local.name, self.cfg.monitors)
        watch = set(preds)
        for name in list(self.monitored):
            if name not in watch:
                del self.monitored[name]
        for name in preds:  # in ring order, not the set's: a seeded run must not depend on str hashes
            if name not in self.monitored:
                self.monitored[name] = now  # a fresh assignment gets a full period of grace
        self.prober.keep(watch)

    def suspect(self, name: str, inc: int, accuser: str | None, now: float) -> None:
        """A member just became suspect: start its timer, ``accuser`` its first confirmation."""
        expected = len(self.ring.successors(name, self.cfg.monitors))
        s = Suspicion(inc, now, expected, self.cfg.suspicion_min, self.cfg.suspicion_max)
        s.confirm(accuser)
        self.suspicions[name] = s

    def confirm(self, name: str, inc: int, accuser: str | None) -> bool:
        """Another accuser of a suspect member: True if it is new (the timer shortened)."""
        s = self.suspicions.get(name)
        m = self.table.get(name)
        return s is not None and m is not None and m.state == SUSPECT and inc == s.inc and s.confirm(accuser)

    def member_changed(self, name: str, new: MemberState, ring_changed: bool, now: float) -> float | None:
        """Bookkeeping after a member changed state. Returns when it was last heard: our own
        observation if we watched it, else estimated from when its monitors suspected it."""
        last = self.monitored.get(name)
        if new != SUSPECT:
            ended = self.suspicions.pop(name, None)
            if last is None and ended is not None:
                last = ended.start - self.cfg.suspect_after
        if ring_changed:
            self.refresh(now)
        if new == ALIVE and name in self.monitored:
            self.monitored[name] = now  # give a refuted or returning member a full period
        return last
