"""The chatter protocol as a pure state machine (sans-IO, in the manner of h11).

A :class:`Node` does no I/O and reads no clock. Its shell feeds it datagrams and the time:

    node.receive(data, addr, now)      # a datagram arrived
    node.handle_timers(now)            # run what is due; returns next_deadline(), when to call it again
    node.take_outgoing()               # [(datagram, addr)] to send
    node.take_events()                 # [MemberEvent | Delivery | RoleEvent] that happened

``now`` is a monotonic clock in seconds; ``wall_offset`` turns it into Unix time for the
timestamps carried on the wire. Randomness comes from the ``rng`` passed in, so a seeded
simulation is reproducible; log lines go through the ``logger`` factory passed in. The same
object runs under trio (runtime.py) and under the virtual-time simulator (sim.py).

The Node is the composition of one module per mechanism; it only dispatches messages to
them and finds the earliest deadline:

    detector.py   heartbeats, monitors, suspicion, local health; rtt.py: Vivaldi coordinates
    state.py      member news (alive/suspect/dead/left), refutation, transitions → events; forceleave.py
    gossip.py     piggyback broadcast of news: fanout, retransmit budget (queue.py)
    rumors.py     application messages: inject, deduplicate, deliver, forward; repair.py: what mongering missed
    sync.py       join, push-pull anti-entropy, reconnect
    election.py   role elections, claims and epochs, quorum, lock gating
    query.py      questions to members, answered to the asker; keys.py, userquery.py on it
    delegate.py   what payloads mean (chatter_rs.py: chatter-rs's devices and view gossip)
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from chatterd.core import wire
from chatterd.core.chatter_rs import ChatterRs
from chatterd.core.config import QUERY_TIMEOUT, SEAL_OVERHEAD, Config
from chatterd.core.context import Context
from chatterd.core.delegate import Delegate
from chatterd.core.detector import Detector
from chatterd.core.digest import Digest
from chatterd.core.effects import Effects, LoggerFactory
from chatterd.core.election import Election
from chatterd.core.events import Event
from chatterd.core.forceleave import ForceLeave
from chatterd.core.gossip import Gossip
from chatterd.core.keys import Keys, own_tags
from chatterd.core.local import Local, check_tags
from chatterd.core.membership import DEAD, LEFT, LIVE, SUSPECT, Member, MemberTable
from chatterd.core.query import Queries
from chatterd.core.queue import BroadcastQueue
from chatterd.core.repair import Repair
from chatterd.core.ring import Ring
from chatterd.core.roles import RoleBook
from chatterd.core.rumors import Rumors
from chatterd.core.seal import Opened, Sealer, SealError, is_sealed
from chatterd.core.state import MemberNews
from chatterd.core.sync import Sync
from chatterd.core.userquery import UserQueries

Addr = tuple[str, int]

__all__ = ["Addr", "Node", "check_tags"]


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
        discover: bool = False,
        node_id: str | None = None,
        incarnation: int | None = None,
        tags: Mapping[str, str] | None = None,
        expect: int | None = None,
        role_lock: bool = False,
        logger: LoggerFactory | None = None,
        delegate: Callable[[Config, Digest, Node], Delegate] | None = None,
        sealer: Sealer | None = None,
    ) -> None:
        if sealer is not None:
            # Sealing adds SEAL_OVERHEAD bytes: build datagrams that much smaller.
            config = config.replace(max_datagram=config.max_datagram - SEAL_OVERHEAD)
        self.cfg = config
        self.sealer = sealer
        self.keyring = sealer.keyring if sealer is not None else None
        checked = check_tags(config, name, own_tags(tags or {}, self.keyring))  # raises TagsError
        node_id = node_id or str(uuid.UUID(int=rng.getrandbits(128), version=4))
        # A restarted node must come back with a higher incarnation than its previous life:
        # starting from the wall clock in milliseconds gives that without any saved state.
        inc = incarnation if incarnation is not None else int((now + wall_offset) * 1000)
        self.local = me = Local(name, node_id, addr, inc, checked, wall_offset)
        me.boot = me.wall_ms(now)
        self.rng = rng
        self.fx = fx = Effects(name, logger, sealer)

        self.digest = Digest()  # summary of members, application state and claims, for anti-entropy
        self.table = MemberTable(self.digest)
        self.table.apply_alive(name, node_id, addr, inc, now, checked)
        self.ring = Ring()
        self.ring.add(name)
        ctx = Context(config, me, self.table, self.ring, self.digest, rng, fx)
        self.gossip = Gossip(ctx)
        self.detector = Detector(ctx, now)
        self.news = MemberNews(ctx, self.detector, self.gossip)
        seeded = bool(seeds) or discover
        self.election = Election(ctx, self.gossip, now=now, seeded=seeded, expect=expect, gated=role_lock)
        self.delegate = (delegate or ChatterRs)(config, self.digest, self)
        self.sync = Sync(
            ctx,
            self.news,
            self.election,
            self.delegate,
            self.gossip,
            now=now,
            seeds=list(seeds or []),
            discover=discover,
        )
        self.repair = Repair(ctx, self.gossip)
        self.rumors = Rumors(ctx, self.gossip, self.repair, self.delegate)
        self.queries = Queries(ctx, self.gossip)
        self.user_queries = UserQueries(ctx, self.queries, self.gossip, self.detector.rtt)  # .ask, .respond
        self.force = ForceLeave(ctx, self.news, self.gossip)  # force.request(name, prune, now): forceleave.py
        self.keys = Keys(ctx, self.queries, self.keyring, lambda now: self.set_tags(self.local.tags, now))
        if sealer is not None:
            fx.member_key = self.keys.member_key
        # The mechanisms' hooks into each other.
        self.detector.accuse = self.news.on_suspect
        self.detector.declare_dead = self.news.on_dead
        self.news.on_change = self.election.member_changed
        self.election.set_tags = self.set_tags
        self.election.sync_now = self.sync.soon
        self.detector.woke = self.sync.soon
        self.rtt = self.detector.rtt  # network coordinates (core/rtt.py), the detector's
        self._handlers = self._dispatch_table()
        self.detector.refresh(now)

    def _dispatch_table(self) -> dict[type, Callable[[Any, Addr, float], None]]:
        """Message type → the mechanism that handles it: (message, source, now)."""
        news = self.news
        return {
            wire.Heartbeat: lambda msg, src, now: None,  # its arrival was recorded in receive()
            **self.detector.handlers(),  # ping, ping-req, vouch, rtt, rtt-ack
            wire.Lease: self.election.on_lease,
            wire.Rumor: lambda msg, src, now: self.rumors.on_rumor(msg, now),
            wire.Alive: lambda msg, src, now: news.on_alive(msg, now, src),
            wire.Suspect: lambda msg, src, now: news.on_suspect(msg, now, src),
            wire.Dead: lambda msg, src, now: news.on_dead(msg, now, src),
            wire.Left: self.force.on_left,  # news.on_left, or a force-leave's prune
            wire.Join: self.sync.on_join,
            wire.State: self.sync.on_state,
            wire.DigestMsg: self.sync.on_digest,
            wire.Want: self.sync.on_want,
            wire.RoleClaim: self.election.on_claim_msg,
            wire.Have: self.repair.on_have,
            wire.Inject: self.rumors.on_inject,
            wire.Query: self.queries.on_query,
            wire.Answer: self.queries.on_answer,
        }

    # ------------------------------------------------------------------ the shell's interface

    def take_outgoing(self) -> list[tuple[bytes, Addr]]:
        return self.fx.take_outgoing()

    def take_events(self) -> list[Event]:
        return self.fx.take_events()

    def next_deadline(self) -> float:
        d = min(self.detector.deadline(), self.sync.deadline())
        qs = self.queries.deadline(), self.user_queries.deadline()
        for t in (self.gossip.next_flush, self.repair.next_round, self.election.deadline(), *qs):
            if t is not None and t < d:
                d = t
        return d

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        stats = self.fx.stats
        stats["datagrams_in"] += 1
        stats["bytes_in"] += len(data)
        got = self._open(data, addr)
        if got is None:
            return
        body, opened = got
        try:
            dgram = wire.decode(body, self.cfg.max_receive, self.cfg.max_payload_depth)
        except wire.WireError as e:
            self._dropped(e.reason, "malformed", e.detail, addr)
            return
        sender = dgram.sender
        if opened is not None and self.sealer is not None:
            replay = self.sealer.accept(sender, opened)
            if replay is not None:
                self._dropped(replay, "replayed", f"boot {opened.boot} seq {opened.seq}", addr)
                return
            self.sealer.heard(addr, opened.kid)  # answered in the same key (core/seal.py)
        self.queries.sealed_input = opened is not None
        # No reflection: a sender no member has the address of (judged before its messages
        # change the table: a Join makes it a member) gets back at most the bytes it sent.
        # A joiner pads its Join to max_datagram (core/sync.py), room for one State chunk.
        self.fx.guard(None if self.table.has_addr(addr) else addr, len(data))
        if sender is not None and sender != self.local.name:
            self.news.heard(sender, now)
        handlers = self._handlers
        try:
            for msg in dgram.m:
                handler = handlers.get(type(msg))
                if handler is None:
                    stats["unexpected"] += 1
                else:
                    handler(msg, addr, now)
        finally:
            self.fx.guard(None)
        self.election.reconcile_if_dirty(now)

    def _open(self, data: bytes, addr: Addr) -> tuple[bytes, Opened | None] | None:
        """(the JSON to decode, the seal it came in or None for plaintext), or None if the
        datagram is dropped (counted): it does not authenticate, or it is plaintext and we
        require seals, or it is sealed and we have no key."""
        sealer = self.sealer
        if sealer is None:
            if is_sealed(data):
                self._dropped("version", "malformed", "sealed datagram, and this node has no key", addr)
                return None
            return data, None
        if len(data) > self.cfg.max_receive:
            self._dropped("oversize", "malformed", f"{len(data)} bytes > {self.cfg.max_receive}", addr)
            return None
        if not sealer.incoming and not is_sealed(data):
            self.fx.stats["plaintext_accepted"] += 1  # a rolling move from plaintext: not yet required
            return data, None
        try:
            opened = sealer.open(data)
        except SealError as e:
            self._dropped(e.reason, e.counter, "datagram does not open", addr)
            return None
        return opened.body, opened

    def _dropped(self, reason: str, counter: str, detail: str, addr: Addr) -> None:
        self.fx.drop(reason, counter)
        self.fx.log_wire.debug(
            "datagram_dropped", reason=reason, counter=counter, detail=detail[:200], src=wire.format_addr(addr)
        )

    def handle_timers(self, now: float) -> float:
        self.detector.check_lateness(now)
        if not self.local.leaving:
            self.detector.heartbeat_due(now)
            self.election.lease_due(now)
            self.detector.tick(now)
            self.sync.tick(now)
            self.repair.tick(now)
        self.election.tick(now)
        self.queries.tick(now)
        self.user_queries.tick(now)
        self.gossip.tick(now)
        self.detector.expected_wake = wake = self.next_deadline()
        return wake

    def inject(self, payload: Any, now: float, hops: int | None = None) -> str:
        """Accept a payload into the cluster from this node. Raises PayloadError."""
        return self.rumors.inject(payload, now, hops)

    def keys_request(
        self, op: str, key: str | None, now: float, *, force: bool = False, timeout: float = QUERY_TIMEOUT
    ) -> str:
        """Start a keyring operation on every member (core/keys.py): a KeysResult event with
        the returned id ends it. Raises KeyringError or QueryError."""
        return self.keys.request(op, key, now, force=force, timeout=timeout)

    def set_seeds(self, seeds: list[Addr], now: float) -> None:
        """The seeds' addresses changed (the shell resolves names): joined through these now."""
        self.sync.set_seeds(seeds, now)

    def leave(self, now: float) -> None:
        """Announce a graceful leave to every live member; the shell exits afterwards."""
        me = self.local
        if me.leaving:
            return
        self.election.release_all("leaving the cluster", now)
        me.leaving = True
        self.table.set(self.table.members[me.name], now, state=LEFT)
        data = wire.encode([wire.Left(node=me.name, inc=me.inc)], me.name)
        for m in self.table.members.values():
            if m.name != me.name and m.state in LIVE:
                self.fx.send(data, m.addr)
        self.gossip.clear()

    def set_tags(self, new: Mapping[str, str], now: float) -> bool:
        """Replace this node's tags (raises TagsError): see MemberNews.set_own_tags. False
        when the tags were already these."""
        changed = self.news.set_own_tags(own_tags(new, self.keyring), now)
        self.election.reconcile_if_dirty(now)
        return changed

    def set_failing(self, reason: str | None, now: float, source: str = "check") -> None:
        """Our check (or application) failed (reason) or passes again (None): see
        Election.set_failing; hold_role withholds one role (an application's lease)."""
        self.election.set_failing(reason, now, source)

    def hold_role(self, role: str, reason: str | None, now: float) -> None:
        self.election.hold_role(role, reason, now)

    def take_lock_requests(self) -> list[tuple[str, str]]:
        """("want", role): we won the election, get the lock and call grant_role;
        ("unwant", role): we gave it up, release the lock."""
        return self.election.take_lock_requests()

    def grant_role(self, role: str, epoch: int, now: float) -> bool:
        """The lock service gave us ``role`` at ``epoch`` (its revision). False if we no
        longer want it (the shell must then release the lock)."""
        return self.election.grant_role(role, epoch, now)

    def revoke_role(self, role: str, reason: str, now: float) -> None:
        """The lock service took ``role`` away (lease expired, lock service unreachable)."""
        self.election.revoke_role(role, reason, now)

    def adopt(self, members: dict[str, Member], hashes: list[int], ring: Ring, now: float) -> None:
        """Start from an already converged view (the simulator's bootstrap of big clusters),
        shared copy-on-write with the other nodes instead of built by thousands of joins."""
        self.table.adopt(members, hashes)
        self.ring.adopt(ring)
        self.sync.joined = True
        self.sync.next_join = None
        self.detector.refresh(now)

    # ------------------------------------------------------------------ the delegate's Cluster

    def knows_addr(self, addr: Addr) -> bool:
        return self.table.has_addr(addr)

    def join(self, addr: Addr) -> None:
        self.fx.send(self.sync.join_datagram(), addr)

    def forget(self, member_id: str, now: float) -> None:
        for m in self.table.members.values():
            if m.id == member_id and m.state in (SUSPECT, DEAD):
                self.news.apply(self.table.apply_left(m.name, m.inc, now), now)
                self.gossip.broadcast("m:" + m.name, wire.Left(node=m.name, inc=m.inc), now)

    # ------------------------------------------------------------------ read-only views

    @property
    def name(self) -> str:
        return self.local.name

    @property
    def id(self) -> str:
        return self.local.id

    @property
    def addr(self) -> Addr:
        return self.local.addr

    @property
    def inc(self) -> int:
        return self.local.inc

    @property
    def tags(self) -> dict[str, str]:
        return self.local.tags

    @property
    def leaving(self) -> bool:
        return self.local.leaving

    @property
    def stats(self) -> Counter[str]:
        return self.fx.stats

    @property
    def joined(self) -> bool:
        return self.sync.joined

    @property
    def seeds(self) -> list[Addr]:
        return self.sync.seeds

    @property
    def starved_at(self) -> float | None:
        return self.detector.starved_at

    @property
    def failing(self) -> str | None:
        return self.election.failing

    @property
    def roles(self) -> RoleBook:
        return self.election.roles

    @property
    def queue(self) -> BroadcastQueue:
        return self.gossip.queue
