"""Role elections: who holds each role, claimed with an epoch and fenced by it.

The election rule and the claims' order are core/roles.py's; this module runs them inside a
node. Candidacies are members' ``role:NAME`` tags. Whenever the candidates, the claims or
the quorum may have changed, the node re-runs the election (``reconcile``): it claims a role
it wins (or, with a lock service, asks the shell for the lock first), and releases a role it
no longer wins. Claims are gossiped and ride in every push-pull State chunk.

Safety valves: elections start ``role_settle`` after start or join, so that a node learns
the current claims first; they hold off while a claim's holder is unknown to us (for at most
``Config.unknown_holder_hold`` after the claim came: a phantom holder never shows); and under
``--expect N`` a node counts as its quorum only the members that answered its leases lately
(gossip is not evidence), so a holder cut off into a minority steps down before the
majority can elect another. With a lock service that step-down also asks the shell to give
the lock up ("unwant": the key is deleted at once, not at lease expiry), so the majority's
elected node, which waits for the key, takes over while the cut lasts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import msgspec

from chatterd.core import wire
from chatterd.core.balance import GROUP_PREFIX
from chatterd.core.config import FIRST_SIGHT_MAX, PLAUSIBLE_STEP
from chatterd.core.context import Context, Part
from chatterd.core.digest import bucket_of, signature
from chatterd.core.events import RoleEvent
from chatterd.core.gossip import Gossip
from chatterd.core.membership import DEAD, LIVE, Member
from chatterd.core.roles import FAILING_TAG, TAG_PREFIX, Claim, RoleBook, balanced, candidacies, is_candidacy

Addr = tuple[str, int]

_claim_encoder = msgspec.json.Encoder()


class Election(Part):
    def __init__(
        self, ctx: Context, gossip: Gossip, *, now: float, seeded: bool, expect: int | None, gated: bool
    ) -> None:
        super().__init__(ctx)
        cfg, local = ctx.cfg, ctx.local
        self.gossip = gossip
        # With ``gated`` the shell's lock service must grant a role (grant_role) before we claim it.
        self.roles = RoleBook(local.name, expect, gated=gated)
        self.role_members: dict[str, dict[str, int]] = {}  # member → its candidacies
        self.balanced_of: dict[str, set[str]] = {}  # member → the roles it declares balanced
        self.dirty = False
        self.lock_requests: list[tuple[str, str]] = []  # ("want" | "unwant", role) for the shell
        # Why our candidacies are withheld: a source ("check": --check, "app": --run...) → its
        # reason withholds them all (tag check=failing instead); "role:NAME" → reason, that
        # role's alone (an application's lease on it ran out).
        self.holds: dict[str, str] = {}
        self._withheld: dict[str, str] = {}  # the role tags taken out of ours meanwhile
        # Elections start role_settle after we started (no seeds) or joined: time to learn
        # the other candidates and the current claims first.
        self.settle_at: float | None = None if seeded else now + cfg.role_settle
        self.ready = False
        self._had_quorum = False
        self.next_lease: float | None = None  # under --expect: when to send the next lease requests
        self.set_tags: Callable[[dict[str, str], float], bool] = lambda tags, now: False
        self.sync_now: Callable[[float], None] = lambda now: None  # start a push-pull at once
        # role → (its claim's holder we have no record of, when the claim arrived): the
        # election of the role holds off until unknown_holder_hold after that.
        self.unknown_holders: dict[str, tuple[str, float]] = {}
        self.note_candidacies(local.name, local.tags)

    # ------------------------------------------------------------------ timers

    def deadline(self) -> float | None:
        d = self.settle_at
        if self.next_lease is not None:
            d = self.next_lease if d is None else min(d, self.next_lease)
        if self.unknown_holders and self.ready:
            hold = self.cfg.unknown_holder_hold
            end = min(since for _, since in self.unknown_holders.values()) + hold
            d = end if d is None else min(d, end)
        return d

    def tick(self, now: float) -> None:
        if self.settle_at is not None and now >= self.settle_at:
            self.settle_at = None
            self.ready = self.dirty = True
        if self.unknown_holders and self.ready:
            hold = self.cfg.unknown_holder_hold
            expired = [r for r, (_, since) in self.unknown_holders.items() if now >= since + hold]
            for role, (holder, _) in [(r, self.unknown_holders.pop(r)) for r in expired]:
                if holder not in self.table.members:
                    self.fx.stats["unknown_holder_expired"] += 1
                    self.fx.log_members.warning("unknown_holder_expired", role=role, holder=holder)
                self.dirty = True
        self.reconcile_if_dirty(now)

    def settle(self, now: float) -> None:
        """We just joined: elect only after role_settle, once we know the claims."""
        self.settle_at = now + self.cfg.role_settle

    def lease_due(self, now: float) -> None:
        """Under --expect a candidate asks every member to answer, every lease interval: the
        members that answered lately are its quorum (see members_up)."""
        if self.roles.expect is None or not self.role_members.get(self.local.name):
            self.next_lease = None
            return
        if self.next_lease is None:
            self.next_lease = now
        if now < self.next_lease:
            return
        self.next_lease = max(self.next_lease + self.cfg.lease_interval, now)
        data = wire.encode([wire.Lease(inc=self.local.inc)], self.local.name)
        for m in self.table.members.values():
            if m.name != self.local.name and m.state in LIVE:
                self.fx.send(data, m.addr)
        self.dirty = True

    def on_lease(self, msg: wire.Lease, src: Addr, now: float) -> None:
        if not self.local.leaving:
            self.fx.send_msg(wire.Heartbeat(inc=self.local.inc), src)  # the answer: any datagram

    # ------------------------------------------------------------------ the shell's requests

    @property
    def failing(self) -> str | None:
        """Why all our candidacies are withheld ("check failing: ..."), or None."""
        return next((f"{k} failing: {r}" for k, r in self.holds.items() if not is_candidacy(k)), None)

    def set_failing(self, reason: str | None, now: float, source: str = "check") -> None:
        """Our health check (or our application: source "app") fails (reason) or passes
        again (None). While any source fails, our candidacies are withdrawn from our tags (tag
        check=failing instead), so every node elects someone else and we give up the roles
        we hold; they come back when every source passes."""
        self._hold(source, reason, now)

    def hold_role(self, role: str, reason: str | None, now: float) -> None:
        """Withhold our candidacy for ``role`` alone (reason), or offer it again (None). A
        balanced group is held as a whole, by its range (``shard-0..15``)."""
        group = GROUP_PREFIX + role
        self._hold(group if group in self.local.tags or group in self._withheld else TAG_PREFIX + role, reason, now)

    def _hold(self, key: str, reason: str | None, now: float) -> None:
        if reason is None:
            self.holds.pop(key, None)
        else:
            self.holds[key] = reason
        tags = self.local.tags
        offered = {k: v for k, v in tags.items() if is_candidacy(k)} | self._withheld
        every = self.failing is not None
        held = {k: v for k, v in offered.items() if every or k in self.holds}
        new = {k: v for k, v in tags.items() if not is_candidacy(k) and k != FAILING_TAG}
        new |= {k: v for k, v in offered.items() if k not in held}
        if every:
            new[FAILING_TAG] = "failing"
        self._withheld = held
        if new != tags:
            self.set_tags(new, now)

    def take_lock_requests(self) -> list[tuple[str, str]]:
        out, self.lock_requests = self.lock_requests, []
        return out

    def grant_role(self, role: str, epoch: int, now: float) -> bool:
        if role not in self.roles.pending:
            return False
        self.roles.pending.discard(role)
        self._claim(role, epoch, now)
        return True

    def revoke_role(self, role: str, reason: str, now: float) -> None:
        if role in self.roles.held or role in self.roles.pending:
            self._release(role, reason, now, tell_lock=False)
        self.dirty = True  # we may still win the election: ask for the lock again

    def release_all(self, reason: str, now: float) -> None:
        for role in list(self.roles.held) + list(self.roles.pending):
            self._release(role, reason, now)

    # ------------------------------------------------------------------ candidates

    def member_changed(self, m: Member) -> None:
        """A member's state or tags changed: candidacies, or the quorum, may have too."""
        if m.tags or m.name in self.role_members:
            self.note_candidacies(m.name, m.tags)
            self.dirty = True
        elif self.roles.held or self.roles.expect is not None:
            self.dirty = True  # quorum may have changed

    def note_candidacies(self, name: str, member_tags: Mapping[str, str]) -> None:
        c = candidacies(member_tags) if member_tags else {}
        if c or name in self.role_members:
            if c:
                self.role_members[name] = c
            else:
                del self.role_members[name]
            b = balanced(member_tags)
            if b:
                self.balanced_of[name] = b
            else:
                self.balanced_of.pop(name, None)
            self.dirty = True

    def _up(self, m: Member, recent: float) -> bool:
        """Up for role purposes: alive or suspect, or declared dead but heard from since
        ``recent`` (stale news about a member we hear: it will refute it)."""
        return m.state in LIVE or (
            m.state == DEAD and m.last_heard is not None and m.last_heard > recent and m.name != self.local.name
        )

    def members_up(self, now: float) -> int:
        """Our quorum under --expect: ourselves and the members that answered us (any datagram)
        in the last suspect_after - 2 lease intervals. Gossip is not evidence: after a
        partition a minority keeps members it does not monitor "alive" for a while. With
        answers, a holder cut off into a minority steps down by suspect_after after the cut,
        before the majority can declare it dead (suspect_after + suspicion_min after its last
        heartbeat) and elect another: at most one side holds a role."""
        cfg = self.cfg
        recent = now - (cfg.suspect_after - 2 * cfg.lease_interval)
        me = self.local.name
        return 1 + sum(
            1
            for m in self.table.members.values()
            if m.name != me and m.last_heard is not None and m.last_heard > recent
        )

    def candidates(self, now: float) -> dict[str, dict[str, int]]:
        """role → {candidate: priority} over the members we believe up: suspects included (a
        suspicion alone does not move a role), and members declared dead that we heard from
        less than suspect_after ago (stale news, soon refuted: in a healing partition, a
        Dead message from the other side must not make us take over from a live holder)."""
        out: dict[str, dict[str, int]] = {}
        members = self.table.members
        recent = now - self.cfg.suspect_after
        for name, c in self.role_members.items():
            m = members.get(name)
            if m is not None and self._up(m, recent):
                for role, prio in c.items():
                    out.setdefault(role, {})[name] = prio
        return out

    # ------------------------------------------------------------------ the election

    def reconcile_if_dirty(self, now: float) -> None:
        if self.dirty:
            self.reconcile(now)

    def reconcile(self, now: float) -> None:
        self.dirty = False
        if self.local.leaving or not self.ready:
            return
        alive = self.members_up(now) if self.roles.expect is not None else len(self.ring)
        if self.roles.expect is not None:
            quorum = self.roles.quorum(alive)
            if quorum and not self._had_quorum:
                # Back in a majority (a partition healed): learn the claims made meanwhile
                # before claiming anything on the strength of an old one.
                self._had_quorum = True
                self.ready = False
                self.settle_at = now + self.cfg.role_settle
                self.sync_now(now)  # fetch the claims made meanwhile right away
                return
            self._had_quorum = quorum
        # A claim by a member we have no record of: our view is incomplete (a lost state
        # chunk after joining); wait for its record (alive, or dead) before electing, but
        # only for unknown_holder_hold after the claim came (a phantom holder never shows).
        members = self.table.members
        waiting = self.unknown_holders
        unknown = frozenset(
            r for r, (holder, _) in waiting.items() if holder not in members and self.roles.claims[r].holder == holder
        )
        spread = frozenset().union(*self.balanced_of.values())
        take, drop = self.roles.decide(self.candidates(now), alive, unknown, spread)
        for role, reason in drop:
            if self.failing is not None and reason == "no longer a candidate":
                reason = self.failing
            self._release(role, reason, now)
        for role in take:
            if self.roles.gated:
                self.roles.pending.add(role)
                self.lock_requests.append(("want", role))
                self.fx.log_members.info("role_lock_wanted", role=role)
            else:
                self._claim(role, self.roles.next_epoch(role), now)

    def _claim(self, role: str, epoch: int, now: float) -> None:
        me = self.local.name
        claim = Claim(role=role, holder=me, epoch=epoch, ts=self.local.wall_ms(now))
        self._merge(claim)
        self.roles.held[role] = claim
        self.fx.stats["roles_acquired"] += 1
        self.gossip.broadcast("role:" + role, wire.RoleClaim(role=role, holder=me, epoch=epoch, ts=claim.ts), now)
        self.fx.emit(RoleEvent("role-acquired", role, me, epoch, "elected"))
        self.fx.log_members.info("role_acquired", role=role, epoch=epoch)

    def _release(self, role: str, reason: str, now: float, tell_lock: bool = True) -> None:
        claim = self.roles.held.pop(role, None)
        if role in self.roles.pending:
            self.roles.pending.discard(role)
            if tell_lock:
                self.lock_requests.append(("unwant", role))
        if claim is None:
            return
        if self.roles.gated and tell_lock:
            self.lock_requests.append(("unwant", role))
        self.fx.stats["roles_lost"] += 1
        self.fx.emit(RoleEvent("role-lost", role, self.local.name, claim.epoch, reason))
        self.fx.log_members.warning("role_lost", role=role, epoch=claim.epoch, reason=reason)

    # ------------------------------------------------------------------ claims

    def _merge(self, claim: Claim) -> bool:
        old = self.roles.claims.get(claim.role)
        if not self.roles.merge(claim):
            return False
        old_sig = 0 if old is None else signature("role", old.role, old.holder, old.epoch)
        new_sig = signature("role", claim.role, claim.holder, claim.epoch)
        self.digest.update(bucket_of("role:" + claim.role), old_sig, new_sig)
        self.dirty = True
        return True

    def on_claim_msg(self, msg: wire.RoleClaim, src: Addr, now: float) -> None:
        self.on_claim(Claim(role=msg.role, holder=msg.holder, epoch=msg.epoch, ts=msg.ts), now)

    def on_claim(self, claim: Claim, now: float) -> None:
        current = self.roles.claims.get(claim.role)
        if claim.epoch > (FIRST_SIGHT_MAX if current is None else current.epoch + PLAUSIBLE_STEP):
            # As for incarnations (core/state.py, MemberNews.plausible): an honest epoch grows
            # by one per claim, so later elections keep room above any claim we accept.
            self.fx.drop("implausible_epoch")
            return
        if self.roles.superseded(claim):
            self._release(claim.role, f"superseded by {claim.holder} at epoch {claim.epoch}", now)
        if self._merge(claim):
            msg = wire.RoleClaim(role=claim.role, holder=claim.holder, epoch=claim.epoch, ts=claim.ts)
            self.gossip.broadcast("role:" + claim.role, msg, now)
            holder = self.table.members.get(claim.holder)
            if holder is None and claim.holder != self.local.name:
                self.unknown_holders[claim.role] = (claim.holder, now)
            else:
                self.unknown_holders.pop(claim.role, None)
            if claim.holder != self.local.name and (holder is None or holder.state not in LIVE):
                # A new claim by a member we think is gone: we were cut off from it (a healing
                # partition) or we are new. Learn its state before electing anyone else.
                self.ready = False
                self.settle_at = now + self.cfg.role_settle

    def claim_records(self, buckets: set[int] | None) -> list[bytes]:
        """Our claims, encoded for a State chunk (all, or those in some digest buckets)."""
        return [
            _claim_encoder.encode(c)
            for c in self.roles.claims.values()
            if buckets is None or bucket_of("role:" + c.role) in buckets
        ]
