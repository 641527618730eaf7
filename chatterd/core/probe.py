"""Probe before suspecting: SWIM's direct and indirect probes (Das et al. 2002), as a step
between a monitor's first missed heartbeat and its accusation (``Config.probe_before_suspect``,
on in the lan profile; issue #13).

A monitor that has not heard a member for ``probe_after`` seconds starts probing it, one
round every ``probe_interval`` until it hears from it or ``suspect_after`` runs out (then the
detector accuses, as without probes):

* round 0: a :class:`~chatterd.core.wire.Ping` to the member, which answers with its
  Heartbeat (any datagram from it ends the probe: the detector hears it);
* every later round: the Ping again, and a :class:`~chatterd.core.wire.PingReq` to
  ``probe_relays`` other members, drawn from the member's other monitors (they hear its
  heartbeats, so they can answer at once) and the next ones on the ring. A relay that heard
  the member within ``probe_after`` answers with a :class:`~chatterd.core.wire.Vouch`
  straight away, saying how long ago; otherwise it pings the member and vouches once it hears
  from it. The asker counts the member heard when the relay heard it, so a vouch never
  stretches a dead member's silence.

A lost heartbeat thus costs a round trip or two, not a suspicion gossiped to the cluster.
Bounds: a node answers pings and ping-reqs from members only (no reflection), relays at most
MAX_RELAYED_PROBES probes at once, and accepts a vouch only for a member it is probing.
"""

from __future__ import annotations

from chatterd.core import wire
from chatterd.core.config import MAX_RELAYED_PROBES
from chatterd.core.context import Context, Part
from chatterd.core.membership import LIVE

Addr = tuple[str, int]


class Prober(Part):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.next_round: dict[str, float] = {}  # members we probe → when the next round is due
        self.rounds: dict[str, int] = {}  # members we probe → rounds sent so far
        self.relayed: dict[str, dict[Addr, float]] = {}  # member we check for others → asker → until
        self.relay_count = 0

    # ------------------------------------------------------------------ as a monitor

    def due(self, name: str, last: float) -> float:
        """When the next probe round of a member last heard at ``last`` is due."""
        return self.next_round.get(name, last + self.cfg.probe_after)

    def probe(self, name: str, now: float) -> None:
        """Send one round of probes of ``name``."""
        cfg = self.cfg
        r = self.rounds.get(name, 0)
        self.fx.send_msg(wire.Ping(), self.table.members[name].addr)
        if r > 0:
            for relay in self._relays(name):
                self.fx.send_msg(wire.PingReq(node=name), self.table.members[relay].addr)
                self.fx.stats["probe_requests"] += 1
        self.fx.stats["probes"] += 1
        self.rounds[name] = r + 1
        self.next_round[name] = now + cfg.probe_interval

    def _relays(self, name: str) -> list[str]:
        """Members to ask: ``name``'s other monitors first, then the next ones on its ring."""
        me = self.local.name
        near = [x for x in self.ring.successors(name, self.cfg.monitors + self.cfg.probe_relays) if x != me]
        k = min(self.cfg.probe_relays, len(near))
        return self.rng.sample(near, k) if k else []

    def stop(self, name: str) -> None:
        """We heard ``name`` (or stopped watching it): its probe, if any, is over."""
        if self.next_round:
            self.next_round.pop(name, None)
            self.rounds.pop(name, None)

    def keep(self, names: set[str]) -> None:
        """Forget the probes of members we no longer watch."""
        for name in [n for n in self.next_round if n not in names]:
            self.stop(name)

    def delay(self, seconds: float) -> None:
        """Our own timers ran late (local health): push the probe rounds back as well."""
        for name in self.next_round:
            self.next_round[name] += seconds

    def vouched(self, msg: wire.Vouch, src: Addr, now: float) -> float | None:
        """A Vouch arrived: when the member was heard, if it counts (a member vouches for a
        member we probe), else None. ``ago`` is bounded by suspect_after: a relay vouches
        only for a member heard within probe_after, and a bigger figure is no news."""
        if msg.node not in self.next_round or not self.table.has_addr(src):
            return None
        self.fx.stats["vouches_accepted"] += 1
        return now - min(msg.ago / 1000, self.cfg.suspect_after)

    # ------------------------------------------------------------------ for the others

    def on_ping(self, msg: wire.Ping, src: Addr, now: float) -> None:
        if self.table.has_addr(src) and not self.local.leaving:
            self.fx.send(wire.encode([wire.Heartbeat(inc=self.local.inc)], self.local.name), src)

    def on_ping_req(self, msg: wire.PingReq, src: Addr, now: float) -> None:
        m = self.table.get(msg.node)
        if m is None or m.state not in LIVE or msg.node == self.local.name or not self.table.has_addr(src):
            return
        if m.last_heard is not None and now - m.last_heard < self.cfg.probe_after:
            ago = max(0, round((now - m.last_heard) * 1000))
            self.fx.send_msg(wire.Vouch(node=msg.node, ago=ago), src)
            return
        askers = self.relayed.setdefault(msg.node, {})
        if src not in askers:
            if self.relay_count >= MAX_RELAYED_PROBES:
                self._expire(now)
            if self.relay_count >= MAX_RELAYED_PROBES:
                self.fx.stats["probe_relays_refused"] += 1
                return
            self.relay_count += 1
        askers[src] = now + self.cfg.suspect_after  # the asker gives up before this
        self.fx.send_msg(wire.Ping(), m.addr)

    def _expire(self, now: float) -> None:
        """Forget the relayed probes whose askers gave up (members that never answered)."""
        for name, askers in list(self.relayed.items()):
            for asker in [a for a, until in askers.items() if until < now]:
                del askers[asker]
                self.relay_count -= 1
            if not askers:
                del self.relayed[name]

    def heard(self, name: str, now: float) -> None:
        """A datagram came straight from ``name``: vouch for it to whoever asked us to check."""
        if not self.relayed:
            return
        askers = self.relayed.pop(name, None)
        if askers is None:
            return
        self.relay_count -= len(askers)
        for asker, until in askers.items():
            if now <= until:
                self.fx.send_msg(wire.Vouch(node=name), asker)
