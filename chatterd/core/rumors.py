"""Rumors: application messages, accepted from this node (inject) or from a peer, delivered
exactly once per node, and forwarded while they have hops left (rumor mongering).

Duplicates are filtered by message id (core/dedup.py); messages older than
``max_message_age`` are dropped, so a message cannot come back after its id was forgotten.
What a payload means is the delegate's business (core/delegate.py). Messages for the whole
cluster are numbered per origin stream, so that repair (core/repair.py) can find the ones
mongering missed. chatter-inject's requests carry an id that makes retries idempotent.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from chatterd.core import wire
from chatterd.core.bounds import saturate
from chatterd.core.config import FIRST_SIGHT_MAX, INJECT_NACK_ERROR_MAX, LAMPORT_ADOPT_MAX, MAX_INJECT_IDS
from chatterd.core.context import Context, Part
from chatterd.core.dedup import SeenSet
from chatterd.core.delegate import Delegate, PayloadError
from chatterd.core.events import Delivery
from chatterd.core.gossip import Gossip
from chatterd.core.repair import Repair

Addr = tuple[str, int]


class Rumors(Part):
    def __init__(self, ctx: Context, gossip: Gossip, repair: Repair, delegate: Delegate) -> None:
        super().__init__(ctx)
        cfg = ctx.cfg
        self.gossip = gossip
        self.repair = repair
        self.delegate = delegate
        self.lt = 0  # Lamport clock
        self.seq = 0  # last sequence number in our stream (local.boot)
        self.seen: SeenSet[None] = SeenSet(cfg.seen_ttl, cfg.seen_max)
        self.injects: SeenSet[str] = SeenSet(cfg.seen_ttl, MAX_INJECT_IDS)

    def inject(self, payload: Any, now: float, hops: int | None = None, mid: str | None = None) -> str:
        """Accept a payload into the cluster from this node; its message id (``mid`` if
        given: see on_inject). Raises PayloadError."""
        cfg = self.cfg
        self.delegate.validate(payload)
        if wire.depth(payload) > cfg.max_payload_depth:
            raise PayloadError(f"payload nesting deeper than {cfg.max_payload_depth}")
        self.lt = saturate(self.lt + 1)
        # Messages for the whole cluster are numbered for repair; a message given a limited
        # hop budget (chatter-rs's scoped sends, hops 0 = this node only) is not repaired.
        if hops is None:
            self.seq = saturate(self.seq + 1)
        budget = cfg.hop_budget(len(self.ring)) if hops is None else max(0, min(hops, cfg.max_hops))
        rumor = wire.Rumor(
            id=mid or uuid.UUID(int=self.rng.getrandbits(128), version=4).hex,
            origin=self.local.name,
            ts=self.local.wall_ms(now),
            lt=self.lt,
            hops=budget,
            payload=payload,
            boot=self.local.boot if hops is None else 0,
            seq=self.seq if hops is None else 0,
        )
        size = len(wire.encode_message(rumor))
        limit = wire.max_message_size(cfg.max_datagram)
        if size > limit:
            raise PayloadError(f"message is {size} bytes encoded, over the {limit}-byte limit")
        self.on_rumor(rumor, now, local=True)
        return rumor.id

    def on_rumor(self, r: wire.Rumor, now: float, local: bool = False) -> None:
        if not self.seen.add(r.id, now):
            self.fx.stats["duplicates"] += 1
            return
        if not local:
            if self.local.wall(now) * 1000 - r.ts > self.cfg.max_message_age * 1000:
                self.fx.stats["stale"] += 1
                return
            if r.hops > self.cfg.max_hops:
                r = msgspec.structs.replace(r, hops=self.cfg.max_hops)
            reason = self._check(r)
            if reason is not None:
                self.fx.drop(reason[0])
                self.fx.log_wire.debug("rumor_dropped", reason=reason[0], detail=reason[1], id=r.id)
                return
        self.lt = saturate(max(self.lt, min(r.lt, LAMPORT_ADOPT_MAX)) + 1)
        kind = self.delegate.kind(r.payload)
        self.fx.stats["delivered"] += 1
        self.fx.stats["delivered_" + kind] += 1
        self.delegate.deliver(r, kind, now)
        self.fx.emit(Delivery(r.id, kind, r.origin, r.ts, r.hops, r.payload))
        if r.seq:
            self.repair.delivered(r, now)
        # The origin sends with the full budget; every later hop spends one (chatter-rs's
        # rule). An absurd budget from the wire was clamped to max_hops above.
        if r.hops > 0:
            fwd = r if local else msgspec.structs.replace(r, hops=r.hops - 1)
            self.gossip.broadcast("r:" + r.id, fwd, now)

    def _check(self, r: wire.Rumor) -> tuple[str, str] | None:
        """Why a rumor from the network must be dropped, or None. Peers are held to the
        same rules as local injects: a valid payload, small enough to forward."""
        try:
            self.delegate.validate(r.payload)
        except PayloadError as e:
            return "payload", str(e)
        if r.lt > FIRST_SIGHT_MAX:
            # A Lamport clock grows by one per message: 2^62 is never honest, and refusing it
            # keeps 2^62 of room for ours (which saturates at the wire's bound regardless).
            return "implausible_lt", f"Lamport time {r.lt} > {FIRST_SIGHT_MAX}"
        size = len(wire.encode_message(r))
        limit = wire.max_message_size(self.cfg.max_datagram)
        if size > limit:
            return "too_big", f"rumor is {size} bytes, over the {limit}-byte limit"
        return None

    def on_inject(self, msg: wire.Inject, src: Addr, now: float) -> None:
        """chatter-inject's request: accept it once, acknowledge every retry."""
        name = self.local.name
        known = self.injects.get(msg.rid)
        if known is not None:
            self.fx.send_msg(wire.InjectAck(rid=msg.rid, id=known, node=name), src)
            return
        # The request id becomes the message id, so that `chatter-inject --no-wait` can print
        # the id it sent; a request id that is not one (32 hex digits) or is already a
        # message's here gets a new one (the acknowledgement says which).
        own = msg.rid if _is_message_id(msg.rid) and msg.rid not in self.seen else None
        try:
            mid = self.inject(msg.payload, now, msg.hops, own)
        except PayloadError as e:
            self.fx.stats["injects_rejected"] += 1
            self.fx.send_msg(wire.InjectNack(rid=msg.rid, error=str(e)[:INJECT_NACK_ERROR_MAX]), src)
            return
        self.fx.stats["injects"] += 1
        self.injects.add(msg.rid, now, mid)
        self.fx.send_msg(wire.InjectAck(rid=msg.rid, id=mid, node=name), src)


_HEX = frozenset("0123456789abcdef")


def _is_message_id(text: str) -> bool:
    """A message id as nodes make them: 32 lowercase hex digits (a UUID's hex)."""
    return len(text) == 32 and _HEX.issuperset(text)
