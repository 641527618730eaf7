"""The chatter protocol as a pure state machine (sans-IO, in the manner of h11).

A :class:`Node` does no I/O and reads no clock. Its shell feeds it datagrams and the time:

    node.receive(data, addr, now)      # a datagram arrived
    node.handle_timers(now)            # the time is now; run what is due
    node.next_deadline()               # when to call handle_timers next
    node.take_outgoing()               # [(datagram, addr)] to send
    node.take_events()                 # [MemberEvent | Delivery] that happened

``now`` is a monotonic clock in seconds; ``wall_offset`` turns it into Unix time for the
timestamps carried on the wire. Randomness comes from the ``rng`` passed in, so a seeded
simulation is reproducible. The same object runs under trio (runtime.py) and under the
virtual-time simulator (sim.py).
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any

import msgspec
import structlog

from chatterd.core import payloads, tags, wire
from chatterd.core.config import Config
from chatterd.core.dedup import SeenSet
from chatterd.core.devices import DeviceTable
from chatterd.core.digest import Digest, bucket_of, signature
from chatterd.core.dissemination import BroadcastQueue
from chatterd.core.events import Delivery, Event, MemberEvent, RoleEvent
from chatterd.core.membership import ALIVE, DEAD, LEFT, SUSPECT, Member, MemberTable, Transition
from chatterd.core.repair import RepairStore
from chatterd.core.ring import Ring
from chatterd.core.roles import FAILING_TAG, TAG_PREFIX, Claim, RoleBook, candidacies
from chatterd.core.suspicion import Suspicion

Addr = tuple[str, int]

MAX_FLUSH_DATAGRAMS = 16  # datagrams one flush may send to one target
MAX_REPAIR_RUMORS = 256  # rumors sent in answer to one repair summary
# Room kept, beyond a node's own Alive message, in a datagram: a state chunk's header and a
# longer sender name, so that its record (with its tags) fits in anyone's datagram.
RECORD_ROOM = 128

_claim_encoder = msgspec.json.Encoder()

log_wire = structlog.get_logger("chatterd.wire")
log_members = structlog.get_logger("chatterd.membership")

# Member transitions (old state, new state) → event kind.
_EVENT_KIND = {
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


class Node:
    def __init__(
        self,
        config: Config,
        name: str,
        addr: Addr,
        *,
        now: float,
        wall_offset: float,
        rng: random.Random,
        seeds: list[Addr] | None = None,
        node_id: str | None = None,
        incarnation: int | None = None,
        tags: Mapping[str, str] | None = None,
        expect: int | None = None,
        role_lock: bool = False,
    ) -> None:
        self.cfg = config
        self.name = name
        self.addr = addr
        self.tags = check_tags(config, name, tags or {})  # raises TagsError
        self.id = node_id or str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.wall_offset = wall_offset
        self.rng = rng
        # A restarted node must come back with a higher incarnation than its previous life:
        # starting from the wall clock in milliseconds gives that without any saved state.
        self.inc = incarnation if incarnation is not None else int((now + wall_offset) * 1000)
        self.lt = 0  # Lamport clock
        self.boot = int(self.wall(now) * 1000)  # names the stream of rumors we originate
        self.seq = 0  # last sequence number in that stream
        self.leaving = False

        self.digest = Digest()  # summary of members and devices, for anti-entropy
        self.table = MemberTable(self.digest)
        self.table.apply_alive(name, self.id, addr, self.inc, now, self.tags)
        self.ring = Ring()
        self.ring.add(name)
        self.queue = BroadcastQueue()
        self.seen: SeenSet[None] = SeenSet(config.seen_ttl, config.seen_max)
        self.injects: SeenSet[str] = SeenSet(config.seen_ttl, 10_000)
        self.devices = DeviceTable(self.digest)
        self.repair = RepairStore(config.repair_window, config.repair_grace)
        # Roles (core/roles.py): candidates are members with role:NAME tags. With role_lock,
        # the shell's lock service must grant a role (grant_role) before we claim it.
        self.roles = RoleBook(name, expect, gated=role_lock)
        self._role_members: dict[str, dict[str, int]] = {}  # member → its candidacies
        self._roles_dirty = False
        self._lock_requests: list[tuple[str, str]] = []  # ("want" | "unwant", role) for the shell
        self.failing: str | None = None  # why our --check fails (our candidacies are withdrawn)
        self._withdrawn: dict[str, str] = {}
        self._note_candidacies(name, self.tags)
        # Elections start role_settle after we started (no seeds) or joined: time to learn
        # the other candidates and the current claims first.
        self._roles_at: float | None = None if seeds else now + config.role_settle
        self._roles_ready = False
        self._had_quorum = False
        self.suspicions: dict[str, Suspicion] = {}
        self.monitored: dict[str, float] = {}  # members we monitor → when we last heard them
        self._dead: dict[str, None] = {}  # members we believe dead (reconnect candidates), in order
        self.stats: Counter[str] = Counter()

        self._out: list[tuple[bytes, Addr]] = []
        self._events: list[Event] = []
        self.seeds = list(seeds or [])
        self.joined = not self.seeds
        phase = rng.random()
        # Heartbeats go out on a grid shared by every node (multiples of the interval in wall
        # time): a node's own sends and its monitored peers' heartbeats then arrive together,
        # and an idle node wakes up about twice per interval instead of 1 + monitors times.
        hb = config.heartbeat_interval
        self._next_hb = now + hb - (now + wall_offset) % hb
        self._next_flush: float | None = None
        self._next_pushpull = now + (0.5 + phase) * config.pushpull_interval
        self._next_reconnect = now + (0.5 + phase) * config.reconnect_interval
        self._next_join: float | None = now if self.seeds else None
        self._next_repair: float | None = None  # set while we hold recent rumors
        self._expected_wake: float | None = None
        self.starved_at: float | None = None  # when our own timers last ran late (local health)
        self._refresh_monitored(now)

    # ------------------------------------------------------------------ shell interface

    def take_outgoing(self) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def take_events(self) -> list[Event]:
        ev, self._events = self._events, []
        return ev

    def wall(self, now: float) -> float:
        return now + self.wall_offset

    def next_deadline(self) -> float:
        d = self._next_hb
        if self._next_flush is not None:
            d = min(d, self._next_flush)
        if self._next_join is not None:
            d = min(d, self._next_join)
        if self._next_repair is not None:
            d = min(d, self._next_repair)
        if self._roles_at is not None:
            d = min(d, self._roles_at)
        d = min(d, self._next_pushpull, self._next_reconnect)
        after = self.cfg.suspect_after
        for name, last in self.monitored.items():
            if self._may_accuse(name):
                d = min(d, last + after)
        for s in self.suspicions.values():
            d = min(d, s.deadline)
        return d

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        self.stats["datagrams_in"] += 1
        self.stats["bytes_in"] += len(data)
        try:
            dgram = wire.decode(data, self.cfg.max_receive, self.cfg.max_payload_depth)
        except wire.WireError as e:
            self.stats["malformed"] += 1
            self.stats[f"malformed_{e.reason}"] += 1
            log_wire.debug("datagram_dropped", reason=e.reason, detail=e.detail[:200], src=wire.format_addr(addr))
            return
        sender = dgram.sender
        if sender is not None and sender != self.name:
            m = self.table.get(sender)
            if m is not None:
                m = self.table.heard(m, now)
                if sender in self.monitored:
                    self.monitored[sender] = now
                if m.state in (SUSPECT, DEAD) and not self.leaving:
                    # It is talking to us, so it is up: tell it what we believe so it refutes.
                    self._send_direct(self._record_msg(m), m.addr)
        for msg in dgram.m:
            self._dispatch(msg, addr, now)
        if self._roles_dirty:
            self._reconcile_roles(now)

    def handle_timers(self, now: float) -> None:
        if self._expected_wake is not None:
            late = now - self._expected_wake
            if late > self.cfg.max_timer_lateness:
                self.starved_at = now
                self._starved(late)
        if not self.leaving:
            if now >= self._next_hb:
                self._send_heartbeats()
                if self.roles.expect is not None and self._role_members.get(self.name):
                    self._send_leases()
                self._next_hb = max(self._next_hb + self.cfg.heartbeat_interval, now)
            self._check_monitored(now)
            self._check_suspicions(now)
            if self._next_join is not None and now >= self._next_join:
                self._send_join(now)
            if now >= self._next_pushpull:
                self._pushpull(now)
            if now >= self._next_reconnect:
                self._reconnect(now)
            if self._next_repair is not None and now >= self._next_repair:
                self._repair_round(now)
        if self._roles_at is not None and now >= self._roles_at:
            self._roles_at = None
            self._roles_ready = self._roles_dirty = True
        if self._roles_dirty:
            self._reconcile_roles(now)
        if self._next_flush is not None and now >= self._next_flush:
            self._flush(now)
        self._expected_wake = self.next_deadline()

    def inject(self, payload: Any, now: float, hops: int | None = None) -> str:
        """Accept a payload into the cluster from this node. Raises PayloadError."""
        payloads.validate(payload)
        if wire.depth(payload) > self.cfg.max_payload_depth:
            raise payloads.PayloadError(f"payload nesting deeper than {self.cfg.max_payload_depth}")
        self.lt += 1
        # Messages for the whole cluster are numbered for repair; a message given a limited
        # hop budget (chatter-rs's scoped sends, hops 0 = this node only) is not repaired.
        if hops is None:
            self.seq += 1
        budget = self.cfg.hop_budget(len(self.ring)) if hops is None else max(0, min(hops, self.cfg.max_hops))
        rumor = wire.Rumor(
            id=uuid.UUID(int=self.rng.getrandbits(128), version=4).hex,
            origin=self.name,
            ts=int(self.wall(now) * 1000),
            lt=self.lt,
            hops=budget,
            payload=payload,
            boot=self.boot if hops is None else 0,
            seq=self.seq if hops is None else 0,
        )
        size = len(wire.encode_message(rumor))
        limit = wire.max_message_size(self.cfg.max_datagram)
        if size > limit:
            raise payloads.PayloadError(f"message is {size} bytes encoded, over the {limit}-byte limit")
        self._on_rumor(rumor, now, local=True)
        return rumor.id

    def leave(self, now: float) -> None:
        """Announce a graceful leave to every live member; the shell exits afterwards."""
        if self.leaving:
            return
        for role in list(self.roles.held) + list(self.roles.pending):
            self._release(role, "leaving the cluster", now)
        self.leaving = True
        self.table.set(self.table.members[self.name], now, state=LEFT)
        data = wire.encode([wire.Left(node=self.name, inc=self.inc)], self.name)
        for m in self.table.members.values():
            if m.name != self.name and m.state in (ALIVE, SUSPECT):
                self._send(data, m.addr)
        self.queue.clear()
        self._next_flush = None

    def set_tags(self, new: Mapping[str, str], now: float) -> bool:
        """Replace this node's tags (raises TagsError). Like a refutation, the change goes out
        as Alive at a higher incarnation; every node, this one included, reports member-update.
        Returns False when the tags were already these."""
        if self.leaving:
            raise tags.TagsError("the node is leaving")
        checked = check_tags(self.cfg, self.name, new)
        if checked == self.tags:
            return False
        self.tags = checked
        self.inc += 1
        me = self.table.set(self.table.members[self.name], now, inc=self.inc, tags=checked)
        self._broadcast("m:" + self.name, self._alive_msg(), now)
        self._apply(Transition(me, ALIVE, ALIVE, updated=True), now)
        log_members.info("tags_changed", inc=self.inc, tags=checked)
        if self._roles_dirty:
            self._reconcile_roles(now)
        return True

    # ------------------------------------------------------------------ roles

    def set_failing(self, reason: str | None, now: float) -> None:
        """Our health check failed (reason) or passes again (None). While it fails, our
        candidacies are withdrawn from our tags (tag check=failing instead), so every node
        elects someone else and we give up the roles we hold."""
        if reason is not None and self.failing is None:
            self.failing = reason
            self._withdrawn = {k: v for k, v in self.tags.items() if k.startswith(TAG_PREFIX)}
            kept = {k: v for k, v in self.tags.items() if k not in self._withdrawn}
            self.set_tags(kept | {FAILING_TAG: "failing"}, now)
        elif reason is None and self.failing is not None:
            self.failing = None
            kept = {k: v for k, v in self.tags.items() if k != FAILING_TAG}
            self.set_tags(kept | self._withdrawn, now)
            self._withdrawn = {}
        elif reason is not None:
            self.failing = reason

    def take_lock_requests(self) -> list[tuple[str, str]]:
        """("want", role): we won the election, get the lock and call grant_role;
        ("unwant", role): we gave it up, release the lock."""
        out, self._lock_requests = self._lock_requests, []
        return out

    def grant_role(self, role: str, epoch: int, now: float) -> bool:
        """The lock service gave us ``role`` at ``epoch`` (its revision). False if we no
        longer want it (the shell must then release the lock)."""
        if role not in self.roles.pending:
            return False
        self.roles.pending.discard(role)
        self._claim(role, epoch, now)
        return True

    def revoke_role(self, role: str, reason: str, now: float) -> None:
        """The lock service took ``role`` away (lease expired, lock service unreachable)."""
        if role in self.roles.held or role in self.roles.pending:
            self._release(role, reason, now, tell_lock=False)
        self._roles_dirty = True  # we may still win the election: ask for the lock again

    def role_rows(self, now: float) -> list[dict[str, Any]]:
        cands = self._candidates(now)
        rows = []
        for role in sorted(set(self.roles.claims) | set(cands) | {r for c in self._role_members.values() for r in c}):
            claim = self.roles.claims.get(role)
            holder = self.table.members.get(claim.holder) if claim else None
            rows.append(
                {
                    "role": role,
                    "holder": claim.holder if claim else None,
                    "epoch": claim.epoch if claim else 0,
                    "since": claim.ts / 1000 if claim else None,
                    "holder_state": holder.state if holder else None,
                    "candidates": dict(sorted(cands.get(role, {}).items(), key=lambda kv: (-kv[1], kv[0]))),
                    "held_here": role in self.roles.held,
                    "waiting_for_lock": role in self.roles.pending,
                    "why_not_here": self.roles.why_not.get(role),
                }
            )
        return rows

    def _note_candidacies(self, name: str, member_tags: Mapping[str, str]) -> None:
        c = candidacies(member_tags) if member_tags else {}
        if c or name in self._role_members:
            if c:
                self._role_members[name] = c
            else:
                del self._role_members[name]
            self._roles_dirty = True

    def _up(self, m: Member, recent: float) -> bool:
        """Up for role purposes: alive or suspect, or declared dead but heard from since
        ``recent`` (stale news about a member we hear: it will refute it)."""
        return m.state in (ALIVE, SUSPECT) or (
            m.state == DEAD and m.last_heard is not None and m.last_heard > recent and m.name != self.name
        )

    def _members_up(self, now: float) -> int:
        """Our quorum under --expect: ourselves and the members that answered us (any datagram)
        in the last suspect_after - 2 heartbeat intervals. A candidate asks every member to
        answer each heartbeat interval (_send_leases). Gossip is not evidence: after a
        partition a minority keeps members it does not monitor "alive" for a while. With
        answers, a holder cut off into a minority steps down by suspect_after after the cut,
        before the majority can declare it dead (suspect_after + suspicion_min after its last
        heartbeat) and elect another: at most one side holds a role."""
        cfg = self.cfg
        recent = now - (cfg.suspect_after - 2 * cfg.heartbeat_interval)
        return 1 + sum(
            1
            for m in self.table.members.values()
            if m.name != self.name and m.last_heard is not None and m.last_heard > recent
        )

    def _candidates(self, now: float) -> dict[str, dict[str, int]]:
        """role → {candidate: priority} over the members we believe up: suspects included (a
        suspicion alone does not move a role), and members declared dead that we heard from
        less than suspect_after ago (stale news, soon refuted: in a healing partition, a
        Dead message from the other side must not make us take over from a live holder)."""
        out: dict[str, dict[str, int]] = {}
        members = self.table.members
        recent = now - self.cfg.suspect_after
        for name, c in self._role_members.items():
            m = members.get(name)
            if m is None:
                continue
            if self._up(m, recent):
                for role, prio in c.items():
                    out.setdefault(role, {})[name] = prio
        return out

    def _reconcile_roles(self, now: float) -> None:
        self._roles_dirty = False
        if self.leaving or not self._roles_ready:
            return
        alive = self._members_up(now) if self.roles.expect is not None else len(self.ring)
        if self.roles.expect is not None:
            quorum = self.roles.quorum(alive)
            if quorum and not self._had_quorum:
                # Back in a majority (a partition healed): learn the claims made meanwhile
                # before claiming anything on the strength of an old one.
                self._had_quorum = True
                self._roles_ready = False
                self._roles_at = now + self.cfg.role_settle
                self._next_pushpull = now  # fetch the claims made meanwhile right away
                return
            self._had_quorum = quorum
        # A claim by a member we have no record of: our view is incomplete (a lost state
        # chunk after joining); wait for its record (alive, or dead) before electing.
        members = self.table.members
        unknown = frozenset(r for r, c in self.roles.claims.items() if c.holder not in members)
        take, drop = self.roles.decide(self._candidates(now), alive, unknown)
        for role, reason in drop:
            if self.failing is not None and reason == "no longer a candidate":
                reason = f"check failing: {self.failing}"
            self._release(role, reason, now)
        for role in take:
            if self.roles.gated:
                self.roles.pending.add(role)
                self._lock_requests.append(("want", role))
                log_members.info("role_lock_wanted", role=role)
            else:
                self._claim(role, self.roles.next_epoch(role), now)

    def _claim(self, role: str, epoch: int, now: float) -> None:
        claim = Claim(role=role, holder=self.name, epoch=epoch, ts=int(self.wall(now) * 1000))
        self._merge_claim(claim)
        self.roles.held[role] = claim
        self.stats["roles_acquired"] += 1
        self._broadcast("role:" + role, wire.RoleClaim(role=role, holder=self.name, epoch=epoch, ts=claim.ts), now)
        self._events.append(RoleEvent("role-acquired", role, self.name, epoch, "elected"))
        log_members.info("role_acquired", role=role, epoch=epoch)

    def _release(self, role: str, reason: str, now: float, tell_lock: bool = True) -> None:
        claim = self.roles.held.pop(role, None)
        if role in self.roles.pending:
            self.roles.pending.discard(role)
            if tell_lock:
                self._lock_requests.append(("unwant", role))
        if claim is None:
            return
        if self.roles.gated and tell_lock:
            self._lock_requests.append(("unwant", role))
        self.stats["roles_lost"] += 1
        self._events.append(RoleEvent("role-lost", role, self.name, claim.epoch, reason))
        log_members.warning("role_lost", role=role, epoch=claim.epoch, reason=reason)

    def _merge_claim(self, claim: Claim) -> bool:
        old = self.roles.claims.get(claim.role)
        if not self.roles.merge(claim):
            return False
        old_sig = 0 if old is None else signature("role", old.role, old.holder, old.epoch)
        new_sig = signature("role", claim.role, claim.holder, claim.epoch)
        self.digest.update(bucket_of("role:" + claim.role), old_sig, new_sig)
        self._roles_dirty = True
        return True

    def _on_role_claim(self, claim: Claim, now: float) -> None:
        if self.roles.superseded(claim):
            self._release(claim.role, f"superseded by {claim.holder} at epoch {claim.epoch}", now)
        if self._merge_claim(claim):
            msg = wire.RoleClaim(role=claim.role, holder=claim.holder, epoch=claim.epoch, ts=claim.ts)
            self._broadcast("role:" + claim.role, msg, now)
            holder = self.table.members.get(claim.holder)
            if claim.holder != self.name and (holder is None or holder.state not in (ALIVE, SUSPECT)):
                # A new claim by a member we think is gone: we were cut off from it (a healing
                # partition) or we are new. Learn its state before electing anyone else.
                self._roles_ready = False
                self._roles_at = now + self.cfg.role_settle

    def adopt(self, members: dict[str, Member], hashes: list[int], ring: Ring, now: float) -> None:
        """Start from an already converged view (the simulator's bootstrap of big clusters),
        shared copy-on-write with the other nodes instead of built by thousands of joins."""
        self.table.adopt(members, hashes)
        self.ring.adopt(ring)
        self.joined = True
        self._next_join = None
        self._refresh_monitored(now)

    # ------------------------------------------------------------------ views for the API

    def member_rows(self, now: float) -> list[dict[str, Any]]:
        rows = []
        for m in sorted(self.table.members.values(), key=lambda m: m.name):
            heard = 0.0 if m.name == self.name else (None if m.last_heard is None else now - m.last_heard)
            rows.append(
                {
                    "name": m.name,
                    "id": m.id,
                    "addr": wire.format_addr(m.addr),
                    "state": m.state,
                    "incarnation": m.inc,
                    "last_heard_s": None if heard is None else round(heard, 3),
                    "state_since_s": round(now - m.since, 3),
                    "tags": dict(m.tags),
                }
            )
        return rows

    def device_rows(self) -> list[dict[str, Any]]:
        return [
            {"origin": r.origin, "name": r.name, "description": r.description, "metrics": r.metrics}
            for r in sorted(self.devices.present(), key=lambda r: (r.origin, r.name))
        ]

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, msg: wire.Message, src: Addr, now: float) -> None:
        if isinstance(msg, wire.Heartbeat):
            return  # its arrival was recorded in receive()
        if isinstance(msg, wire.Lease):
            if not self.leaving:
                self._send_direct(wire.Heartbeat(inc=self.inc), src)  # the answer: any datagram
            return
        if isinstance(msg, wire.Rumor):
            self._on_rumor(msg, now)
        elif isinstance(msg, wire.Alive):
            self._on_alive(msg, now, src)
        elif isinstance(msg, wire.Suspect):
            self._on_suspect(msg, now, src)
        elif isinstance(msg, wire.Dead):
            self._on_dead(msg, now, src)
        elif isinstance(msg, wire.Left):
            self._on_left(msg, now, src)
        elif isinstance(msg, wire.Join):
            self._on_join(msg, src, now)
        elif isinstance(msg, wire.State):
            self._on_state(msg, src, now)
        elif isinstance(msg, wire.DigestMsg):
            self._on_digest(msg, src)
        elif isinstance(msg, wire.Want):
            self._send_state(src, reply=False, buckets=set(msg.buckets))
        elif isinstance(msg, wire.RoleClaim):
            self._on_role_claim(Claim(role=msg.role, holder=msg.holder, epoch=msg.epoch, ts=msg.ts), now)
        elif isinstance(msg, wire.Have):
            self._on_have(msg, src, now)
        elif isinstance(msg, wire.Inject):
            self._on_inject(msg, src, now)
        else:
            self.stats["unexpected"] += 1

    # ------------------------------------------------------------------ rumors

    def _on_rumor(self, r: wire.Rumor, now: float, local: bool = False) -> None:
        if not self.seen.add(r.id, now):
            self.stats["duplicates"] += 1
            return
        if not local:
            if self.wall(now) * 1000 - r.ts > self.cfg.max_message_age * 1000:
                self.stats["stale"] += 1
                return
            if r.hops > self.cfg.max_hops:
                r = msgspec.structs.replace(r, hops=self.cfg.max_hops)
            reason = self._check_rumor(r)
            if reason is not None:
                self.stats["malformed"] += 1
                self.stats[f"malformed_{reason[0]}"] += 1
                log_wire.debug("rumor_dropped", reason=reason[0], detail=reason[1], id=r.id)
                return
        self.lt = max(self.lt, r.lt) + 1
        kind = payloads.kind_of(r.payload)
        self.stats["delivered"] += 1
        self.stats["delivered_" + kind] += 1
        if kind == "device":
            self.devices.apply(r.payload["DeviceGossip"], (r.lt, r.id), now)
        elif kind == "view":
            self._on_view(r.payload["ViewGossip"], now)
        self._events.append(Delivery(r.id, kind, r.origin, r.ts, r.hops, r.payload))
        if r.seq:
            if self.repair.record((r.origin, r.boot), r.seq, r.ts, r, now):
                self.stats["repaired"] += 1
            if self._next_repair is None:
                self._next_repair = now + self.cfg.repair_interval * (0.5 + self.rng.random())
        # The origin sends with the full budget; every later hop spends one (chatter-rs's
        # rule). An absurd budget from the wire was clamped to max_hops above.
        if r.hops > 0:
            fwd = r if local else msgspec.structs.replace(r, hops=r.hops - 1)
            self._broadcast("r:" + r.id, fwd, now)

    def _check_rumor(self, r: wire.Rumor) -> tuple[str, str] | None:
        """Why a rumor from the network must be dropped, or None. Peers are held to the
        same rules as local injects: a valid payload, small enough to forward."""
        try:
            payloads.validate(r.payload)
        except payloads.PayloadError as e:
            return "payload", str(e)
        size = len(wire.encode_message(r))
        limit = wire.max_message_size(self.cfg.max_datagram)
        if size > limit:
            return "too_big", f"rumor is {size} bytes, over the {limit}-byte limit"
        return None

    def _on_view(self, body: dict[str, Any], now: float) -> None:
        variant, inner = next(iter(body.items()))
        if variant == "ServerAdded":
            addr = wire.parse_addr(inner["addr"])
            if not any(m.addr == addr for m in self.table.members.values()):
                self._send_direct(self._join_msg(), addr)
        else:
            for m in self.table.members.values():
                if m.id == inner["uuid"] and m.state in (SUSPECT, DEAD):
                    self._apply(self.table.apply_left(m.name, m.inc, now), now)
                    self._broadcast("m:" + m.name, wire.Left(node=m.name, inc=m.inc), now)

    def _on_inject(self, msg: wire.Inject, src: Addr, now: float) -> None:
        known = self.injects.get(msg.rid)
        if known is not None:
            self._send_direct(wire.InjectAck(rid=msg.rid, id=known, node=self.name), src)
            return
        try:
            mid = self.inject(msg.payload, now, msg.hops)
        except payloads.PayloadError as e:
            self.stats["injects_rejected"] += 1
            self._send_direct(wire.InjectNack(rid=msg.rid, error=str(e)), src)
            return
        self.stats["injects"] += 1
        self.injects.add(msg.rid, now, mid)
        self._send_direct(wire.InjectAck(rid=msg.rid, id=mid, node=self.name), src)

    # ------------------------------------------------------------------ membership news

    def _on_alive(self, msg: wire.Alive | wire.Join, now: float, src: Addr | None = None) -> None:
        if msg.node == self.name:
            conflict = msg.id != self.id
            if (msg.inc > self.inc or (conflict and msg.inc == self.inc)) and not self.leaving:
                if conflict:
                    log_members.warning("name_conflict", node=msg.node, other_id=msg.id, other_addr=msg.addr)
                self._refute(msg.inc, now, src)
            return
        known = self.table.members.get(msg.node)
        if known is not None and msg.inc <= known.inc:
            return  # old news (the common case): skip parsing
        try:
            addr = wire.parse_addr(msg.addr)
        except ValueError:
            self.stats["malformed"] += 1
            self.stats["malformed_addr"] += 1
            return
        t = self.table.apply_alive(msg.node, msg.id, addr, msg.inc, now, msg.tags)
        if t is not None:
            self._apply(t, now)
            alive = wire.Alive(node=msg.node, id=msg.id, addr=msg.addr, inc=msg.inc, tags=msg.tags)
            self._broadcast("m:" + msg.node, alive, now)

    def _on_suspect(self, msg: wire.Suspect, now: float, src: Addr | None = None, by: str | None = None) -> None:
        if msg.node == self.name:
            if not self.leaving:
                self._refute(msg.inc, now, src)
            return
        accuser = msg.by if by is None else by
        t = self.table.apply_suspect(msg.node, msg.inc, now)
        if t is not None:
            expected = len(self.ring.successors(msg.node, self.cfg.monitors))
            s = Suspicion(msg.inc, now, expected, self.cfg.suspicion_min, self.cfg.suspicion_max)
            s.confirm(accuser or None)
            self.suspicions[msg.node] = s
            self._apply(t, now, by=accuser)
            self._broadcast(f"s:{msg.node}:{accuser}", msg, now)
            return
        s = self.suspicions.get(msg.node)
        m = self.table.get(msg.node)
        if s is not None and m is not None and m.state == SUSPECT and msg.inc == s.inc and s.confirm(accuser or None):
            self.stats["suspicion_confirmations"] += 1
            self._broadcast(f"s:{msg.node}:{accuser}", msg, now)

    def _on_dead(self, msg: wire.Dead, now: float, src: Addr | None = None) -> None:
        if msg.node == self.name:
            if not self.leaving:
                self._refute(msg.inc, now, src)
            return
        t = self.table.apply_dead(msg.node, msg.inc, now)
        if t is not None:
            self._apply(t, now, by=msg.by)
            self._broadcast("m:" + msg.node, msg, now)

    def _on_left(self, msg: wire.Left, now: float, src: Addr | None = None) -> None:
        if msg.node == self.name:
            if not self.leaving and msg.inc >= self.inc:
                self._refute(msg.inc, now, src)  # news of a previous life's leave
            return
        t = self.table.apply_left(msg.node, msg.inc, now)
        if t is not None:
            self._apply(t, now)
            self._broadcast("m:" + msg.node, msg, now)

    def _refute(self, inc: int, now: float, src: Addr | None) -> None:
        self.inc = max(self.inc, inc) + 1
        self.table.set(self.table.members[self.name], now, inc=self.inc)
        self.stats["refutations"] += 1
        alive = self._alive_msg()
        self._broadcast("m:" + self.name, alive, now)
        if src is not None:
            self._send_direct(alive, src)
        log_members.info("refuted", inc=self.inc)

    def _apply(self, t: Transition | None, now: float, by: str | None = None) -> None:
        """Bookkeeping after a member changed state: ring, monitors, suspicions, events."""
        if t is None:
            return
        m = t.member
        if m.tags or m.name in self._role_members:
            self._note_candidacies(m.name, m.tags)
            self._roles_dirty = True
        elif self.roles.held or self.roles.expect is not None:
            self._roles_dirty = True  # quorum may have changed
        # How long it had been silent: our own observation if we watched it, otherwise
        # estimated from when its monitors began to suspect it.
        last = self.monitored.get(m.name)
        if t.new in (ALIVE, SUSPECT):
            changed = self.ring.add(m.name)
        else:
            changed = self.ring.remove(m.name)
        if t.new != SUSPECT:
            ended = self.suspicions.pop(m.name, None)
            if last is None and ended is not None:
                last = ended.start - self.cfg.suspect_after
        if changed:
            self._refresh_monitored(now)
        if t.new == DEAD:
            self._dead[m.name] = None
        else:
            self._dead.pop(m.name, None)
        if t.new == ALIVE and m.name in self.monitored:
            self.monitored[m.name] = now  # give a refuted or returning member a full period
        kind = _EVENT_KIND.get((t.old, t.new))
        if t.updated and t.old == ALIVE:
            kind = "member-update"
        if kind is None:
            return
        after = None
        if t.new == DEAD:
            self.stats["deaths"] += 1
            after = None if last is None else round(now - last, 3)
        elif t.new == SUSPECT:
            self.stats["suspicions"] += 1
        self._events.append(
            MemberEvent(kind, m.name, m.id, wire.format_addr(m.addr), m.inc, m.state, by=by, after_s=after, tags=m.tags)
        )

    def _alive_msg(self) -> wire.Alive:
        return wire.Alive(node=self.name, id=self.id, addr=wire.format_addr(self.addr), inc=self.inc, tags=self.tags)

    def _record_msg(self, m: Member) -> wire.Message:
        addr = wire.format_addr(m.addr)
        if m.state == ALIVE:
            return wire.Alive(node=m.name, id=m.id, addr=addr, inc=m.inc, tags=m.tags)
        if m.state == SUSPECT:
            return wire.Suspect(node=m.name, inc=m.inc, by=self.name)
        if m.state == DEAD:
            return wire.Dead(node=m.name, inc=m.inc, by=self.name)
        return wire.Left(node=m.name, inc=m.inc)

    # ------------------------------------------------------------------ join and anti-entropy

    def _join_msg(self) -> wire.Join:
        return wire.Join(node=self.name, id=self.id, addr=wire.format_addr(self.addr), inc=self.inc, tags=self.tags)

    def _send_join(self, now: float) -> None:
        join = self._join_msg()
        for seed in self.seeds:
            if seed != self.addr:
                self._send_direct(join, seed)
        self._next_join = now + self.cfg.join_retry_interval

    def _on_join(self, msg: wire.Join, src: Addr, now: float) -> None:
        self._on_alive(msg, now, src)
        self._send_state(src, reply=False)

    def _on_state(self, msg: wire.State, src: Addr, now: float) -> None:
        if not self.joined:
            self.joined = True
            self._next_join = None
            # The seed's state misses whoever joined after us in a join storm, and gossip can
            # miss one of them too: an early digest exchange closes the gap in ~2 s, not ~5.
            self._next_pushpull = min(self._next_pushpull, now + 1.0 + self.rng.random())
            self._roles_at = now + self.cfg.role_settle
        members = self.table.members
        for rec in msg.members:
            m = members.get(rec.node)
            if m is not None and (rec.inc < m.inc or (rec.inc == m.inc and rec.state == m.state)):
                continue  # old news: the common case, kept cheap
            if rec.state == ALIVE:
                self._on_alive(_alive_of(rec), now, src)
            elif rec.node == self.name:
                if rec.inc >= self.inc and not self.leaving:
                    self._refute(rec.inc, now, src)
            else:
                if self.table.get(rec.node) is None:
                    try:
                        addr = wire.parse_addr(rec.addr)
                    except ValueError:
                        continue
                    if rec.state in (DEAD, LEFT):
                        # History from before we joined: remember it quietly, no events.
                        self.table.insert(rec.node, rec.id, addr, rec.inc, rec.state, now, rec.tags)
                        continue
                    self._on_alive(_alive_of(rec), now, src)
                if rec.state == SUSPECT:
                    self._on_suspect(wire.Suspect(node=rec.node, inc=rec.inc, by=""), now, src, by="")
                elif rec.state == DEAD:
                    self._on_dead(wire.Dead(node=rec.node, inc=rec.inc, by=""), now, src)
                else:
                    self._on_left(wire.Left(node=rec.node, inc=rec.inc), now, src)
        for dev in msg.devices:
            self.devices.merge(dev, now)
        for claim in msg.roles:
            self._on_role_claim(claim, now)
        if msg.reply:
            self._send_state(src, reply=False)

    def _on_digest(self, msg: wire.DigestMsg, src: Addr) -> None:
        """Push-pull by digest: send the records of the buckets that differ, ask for theirs."""
        differ = self.digest.differing(msg.h)
        if differ:
            self.stats["pushpull_differ"] += 1
            self._send_state(src, reply=False, buckets=set(differ))
            self._send_direct(wire.Want(buckets=differ), src)

    def _state_records(self, buckets: set[int] | None) -> tuple[list[bytes], list[bytes], list[bytes]]:
        members = [
            wire.encode_message(
                wire.MemberRecord(
                    node=m.name, id=m.id, addr=wire.format_addr(m.addr), inc=m.inc, state=m.state, tags=m.tags
                )
            )
            for m in self.table.members.values()
            if buckets is None or m.bucket in buckets
        ]
        devices = [wire.encode_message(r) for r in self.devices.records(buckets)]
        roles = [
            _claim_encoder.encode(c)
            for c in self.roles.claims.values()
            if buckets is None or bucket_of("role:" + c.role) in buckets
        ]
        return members, devices, roles

    def _send_state(self, dest: Addr, reply: bool, buckets: set[int] | None = None) -> None:
        """Send our state (all of it, or the records in some buckets) as State chunks."""
        members, devices, roles = self._state_records(buckets)
        budget = wire.max_message_size(self.cfg.max_datagram) - len(self.name) - 64
        head = wire.encode_message(wire.State(reply=reply))[:-1]  # '{"type":"state"' (+reply)
        # The claims (a few small records) ride in every chunk when they fit in a quarter of
        # it: a node that got any part of our state knows who holds which role.
        roles_part = b',"roles":[' + b",".join(roles) + b"]" if roles else b""
        if len(roles_part) <= budget // 4:
            head += roles_part
            budget -= len(roles_part)
            groups = (("members", members), ("devices", devices))
        else:
            groups = (("roles", roles), ("members", members), ("devices", devices))
        chunks: list[bytes] = []
        for field, records in groups:
            batch: list[bytes] = []
            size = 0
            for rec in records:
                if batch and size + len(rec) + 1 > budget:
                    chunks.append(head + b',"' + field.encode() + b'":[' + b",".join(batch) + b"]}")
                    batch, size = [], 0
                batch.append(rec)
                size += len(rec) + 1
            if batch:
                chunks.append(head + b',"' + field.encode() + b'":[' + b",".join(batch) + b"]}")
        if not chunks:
            chunks.append(head + b"}")
        for chunk in chunks:
            self._send(wire.pack([chunk], self.name, self.cfg.max_datagram)[0], dest)
        self.stats["pushpull_sent"] += 1

    def _pushpull(self, now: float) -> None:
        self._next_pushpull = now + self.cfg.pushpull_interval * (0.75 + 0.5 * self.rng.random())
        peer = self._random_peer()
        if peer is not None:
            self._send_direct(wire.DigestMsg(h=list(self.digest.hashes)), peer.addr)

    def _reconnect(self, now: float) -> None:
        """Try one dead member: if it was only cut off, the exchange merges both sides."""
        self._next_reconnect = now + self.cfg.reconnect_interval * (0.75 + 0.5 * self.rng.random())
        dead = [m for name in self._dead if (m := self.table.members.get(name)) is not None and m.state == DEAD]
        if dead:
            # A digest is small: a member that is really gone costs us one datagram; one
            # that was only cut off answers, and the exchange merges both sides.
            self._send_direct(wire.DigestMsg(h=list(self.digest.hashes)), self.rng.choice(dead).addr)
        elif not self.joined or len(self.ring) <= 1:
            for seed in self.seeds:  # alone: keep knocking on the seeds
                if seed != self.addr:
                    self._send_direct(self._join_msg(), seed)
        for name in self.table.reap(now, self.cfg.reap_after):
            self._dead.pop(name, None)
        self.devices.expire(now, self.cfg.tombstone_ttl)

    # ------------------------------------------------------------------ repair of missed rumors

    def _have(self, now: float, reply: bool) -> wire.Have:
        budget = wire.max_message_size(self.cfg.max_datagram) - len(self.name) - 64
        entries, complete = self.repair.summary(now, budget)
        return wire.Have(s=entries, since=self.boot, all=complete, reply=reply)  # type: ignore[arg-type]

    def _repair_round(self, now: float) -> None:
        self.repair.expire(now)
        if not self.repair.streams:
            self._next_repair = None  # nothing recent: the timer stops until the next rumor
            return
        self._next_repair = now + self.cfg.repair_interval * (0.75 + 0.5 * self.rng.random())
        peer = self._random_peer()
        if peer is not None:
            self.stats["repair_summaries"] += 1
            self._send_direct(self._have(now, reply=False), peer.addr)

    def _on_have(self, msg: wire.Have, src: Addr, now: float) -> None:
        """Send a peer the recent rumors its summary lacks; if it has some we lack, say so."""
        if self.leaving:
            return
        missing = self.repair.answer(msg.s, msg.all, msg.since, now, MAX_REPAIR_RUMORS)  # type: ignore[arg-type]
        if missing:
            self.stats["repair_sent"] += len(missing)
            encoded = [wire.encode_message(msgspec.structs.replace(r, hops=0)) for r in missing]
            for data in wire.pack(encoded, self.name, self.cfg.max_datagram):
                self._send(data, src)
        if not msg.reply and self.repair.behind(msg.s):  # type: ignore[arg-type]
            self.stats["repair_summaries"] += 1
            self._send_direct(self._have(now, reply=True), src)

    # ------------------------------------------------------------------ failure detection

    def _refresh_monitored(self, now: float) -> None:
        watch = set(self.ring.predecessors(self.name, self.cfg.monitors))
        for name in list(self.monitored):
            if name not in watch:
                del self.monitored[name]
        for name in watch:
            if name not in self.monitored:
                self.monitored[name] = now  # a fresh assignment gets a full period of grace

    def _send_leases(self) -> None:
        """Under --expect a candidate asks every member to answer, every heartbeat interval:
        the members that answered lately are its quorum (see _members_up)."""
        data = wire.encode([wire.Lease(inc=self.inc)], self.name)
        for m in self.table.members.values():
            if m.name != self.name and m.state in (ALIVE, SUSPECT):
                self._send(data, m.addr)
        self._roles_dirty = True

    def _send_heartbeats(self) -> None:
        data = wire.encode([wire.Heartbeat(inc=self.inc)], self.name)
        for name in self.ring.successors(self.name, self.cfg.monitors):
            self._send(data, self.table.members[name].addr)

    def _check_monitored(self, now: float) -> None:
        after = self.cfg.suspect_after
        for name, last in list(self.monitored.items()):
            if last + after <= now and self._may_accuse(name):  # the same sum as next_deadline
                m = self.table.members[name]
                msg = wire.Suspect(node=name, inc=m.inc, by=self.name)
                log_members.info("member_suspected", node=name, silent_s=round(now - last, 3))
                self._on_suspect(msg, now)
                self._send_direct(msg, m.addr)  # if it is alive after all, it refutes at once

    def _may_accuse(self, name: str) -> bool:
        """A monitor accuses a silent member once: when it is alive, or suspected by others
        (then our accusation is an independent confirmation that shortens the timeout)."""
        state = self.table.members[name].state
        if state == ALIVE:
            return True
        if state == SUSPECT:
            s = self.suspicions.get(name)
            return s is None or self.name not in s.accusers
        return False

    def _check_suspicions(self, now: float) -> None:
        for name, s in list(self.suspicions.items()):
            if now >= s.deadline:
                m = self.table.members[name]
                self._on_dead(wire.Dead(node=name, inc=m.inc, by=self.name), now)

    def _starved(self, late: float) -> None:
        """Our own timers ran late: do not blame the others for the time we lost."""
        self.stats["starved"] += 1
        for name in self.monitored:
            self.monitored[name] += late
        for s in self.suspicions.values():
            s.delay(late)
        log_members.warning("timers_late", late_s=round(late, 3))

    # ------------------------------------------------------------------ sending

    def _broadcast(self, key: str, msg: wire.Message, now: float) -> None:
        if self.leaving:
            return
        self.queue.add(key, wire.encode_message(msg), self.cfg.retransmits(len(self.ring)))
        due = now + self.cfg.flush_delay
        if self._next_flush is None or due < self._next_flush:
            self._next_flush = due

    def _random_peer(self) -> Member | None:
        n = len(self.ring)
        if n <= 1:
            return None
        for _ in range(8):
            name = self.ring.name_at(self.rng.randrange(n))
            if name != self.name:
                return self.table.members[name]
        return None

    def _flush(self, now: float) -> None:
        n = len(self.ring)
        if n <= 1:
            self.queue.clear()
            self._next_flush = None
            return
        k = min(self.cfg.fanout, n - 1)
        targets: dict[str, None] = {}  # a dict, not a set: its order (and so a seeded run) is reproducible
        while len(targets) < k:
            name = self.ring.name_at(self.rng.randrange(n))
            if name != self.name:
                targets[name] = None
        budget = wire.max_message_size(self.cfg.max_datagram) - len(self.name)
        # Enough datagrams per target to carry the whole backlog once (a loaded node drains
        # many messages per turn), at most MAX_FLUSH_DATAGRAMS each.
        per_target = min(MAX_FLUSH_DATAGRAMS, max(1, -(-self.queue.bytes // budget)))
        for name in targets:
            msgs: list[bytes] = []
            for _ in range(per_target):
                batch = self.queue.take(budget)
                if not batch:
                    break
                msgs += batch
            if not msgs:
                break
            for data in wire.pack(msgs, self.name, self.cfg.max_datagram):
                self._send(data, self.table.members[name].addr)
        self._next_flush = now + self.cfg.gossip_interval if len(self.queue) else None

    def _send_direct(self, msg: wire.Message, dest: Addr) -> None:
        self._send(wire.encode([msg], self.name), dest)

    def _send(self, data: bytes, dest: Addr) -> None:
        self.stats["datagrams_out"] += 1
        self.stats["bytes_out"] += len(data)
        self._out.append((data, dest))


def _alive_of(rec: wire.MemberRecord) -> wire.Alive:
    return wire.Alive(node=rec.node, id=rec.id, addr=rec.addr, inc=rec.inc, tags=rec.tags)


def check_tags(config: Config, name: str, new: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``new`` if a node called ``name`` can carry these tags, or raise TagsError:
    within the tags' own limit, and small enough that its Alive message and member record
    fit in one datagram of ``config.max_datagram`` bytes."""
    checked = tags.validate(new)
    longest = wire.Alive(node=name, id=str(uuid.UUID(int=0)), addr="255.255.255.255:65535", inc=2**63, tags=checked)
    size = len(wire.encode_message(longest)) + RECORD_ROOM
    limit = wire.max_message_size(config.max_datagram)
    if size > limit:
        raise tags.TagsError(
            f"tags too big for {config.max_datagram}-byte datagrams: "
            f"the node's record would take {size} of {limit} bytes"
        )
    return checked
