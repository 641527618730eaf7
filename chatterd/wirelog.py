"""Debug and trace lines about the datagrams a node sends and receives: what a chatter-rs
user expects to see with ``RUST_LOG=debug`` or ``RUST_LOG=trace``.

``debug``, target ``chatterd.gossip``: one line per message of gossip sent or received, with
its kind, its id where it has one (rumors, queries, answers, chatter-inject's requests), the
peer, and what identifies it otherwise (member news: the member and its incarnation; role
claims: the role, holder and epoch)::

    gossip_received kind=rumor id=5c0e... origin=n2 hops=2 peer=127.0.0.1:8081
    gossip_sent kind=suspect node=n3 inc=1796... by=n1 peer=127.0.0.1:8081

The failure detector's and repair's upkeep (heartbeats, pings, vouches, leases, digests)
would drown that at debug: it shows at trace, in the datagram lines.

``trace``, target ``chatterd.wire``: one line per datagram, in or out, with its peer, size,
whether it was sealed, its sender and the kinds of the messages it carries::

    datagram dir=in peer=127.0.0.1:8081 bytes=61 sealed=False sender=n2 kinds=['hb']

Cost: the runtime asks :attr:`WireLog.on` before each datagram (the node's own filter, fixed at
start, or a `chatterd monitor` at debug or trace: chatterd.logtap's gate), and does nothing
more when it is False (the default level, info, and no monitor): no line is built, nothing is
decoded. When it is True the datagram is decoded a second time here
(and opened again when sealed: Sealer.open keeps no state, the replay window is the core's),
which is the price of the lines, paid only by a node that asked for them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import structlog

from chatterd import logs
from chatterd.core import wire
from chatterd.core.config import Config
from chatterd.core.seal import Sealer, SealError, is_sealed
from chatterd.logtap import GATE

Addr = tuple[str, int]

GOSSIP = "chatterd.gossip"
WIRE = "chatterd.wire"

# Shown at trace only (in the datagram lines): the detector's and repair's periodic traffic.
# Lines about failures of this module itself, at most (a bug must not flood the log).
MAX_FAILURE_LINES = 10

UPKEEP = frozenset({"hb", "ping", "ping-req", "vouch", "lease", "digest", "want", "have", "rtt", "rtt-ack"})


def kind_of(msg: wire.Message) -> str:
    """The message's ``type`` on the wire (``hb``, ``rumor``, ``suspect``...)."""
    return str(type(msg).__struct_config__.tag)


def describe(msg: wire.Message) -> dict[str, Any]:
    """What identifies a message of gossip in a log line (its kind comes apart)."""
    if isinstance(msg, wire.Rumor):
        return {"id": msg.id, "origin": msg.origin, "hops": msg.hops}
    if isinstance(msg, (wire.Suspect, wire.Dead)):
        return {"node": msg.node, "inc": msg.inc, "by": msg.by}
    if isinstance(msg, (wire.Alive, wire.Left, wire.Join)):
        return {"node": msg.node, "inc": msg.inc}
    if isinstance(msg, wire.State):
        return {"members": len(msg.members), "devices": len(msg.devices), "roles": len(msg.roles), "reply": msg.reply}
    if isinstance(msg, wire.RoleClaim):
        return {"role": msg.role, "holder": msg.holder, "epoch": msg.epoch}
    if isinstance(msg, wire.Query):
        return {"id": msg.id, "name": msg.name, "origin": msg.origin}
    if isinstance(msg, wire.Answer):
        return {"id": msg.id, "node": msg.node}
    if isinstance(msg, wire.Inject):
        return {"id": msg.rid}
    if isinstance(msg, wire.InjectAck):
        return {"id": msg.id, "rid": msg.rid}
    if isinstance(msg, wire.InjectNack):
        return {"rid": msg.rid, "error": msg.error}
    return {}


class WireLog:
    """The node's datagram lines; ``on`` says whether there are any to write."""

    def __init__(self, name: str, config: Config, sealer: Callable[[], Sealer | None]) -> None:
        self._gossip = logs.enabled(GOSSIP, logging.DEBUG)  # the node's own filter, fixed at start
        self._datagrams = logs.enabled(WIRE, logs.TRACE)
        self._max_size = config.max_receive
        self._max_depth = config.max_payload_depth
        self._sealer = sealer
        self.failures = 0
        self._log_gossip = structlog.get_logger(GOSSIP).bind(at=name)
        self._log_wire = structlog.get_logger(WIRE).bind(at=name)

    @property
    def gossip(self) -> bool:
        """Lines per message of gossip: at the node's level, or for a `chatterd monitor` at debug."""
        return self._gossip or GATE.monitored <= logging.DEBUG

    @property
    def datagrams(self) -> bool:
        return self._datagrams or GATE.monitored <= logs.TRACE

    @property
    def on(self) -> bool:
        """Asked before each datagram: nothing else runs if False."""
        return self._gossip or self._datagrams or GATE.monitored <= logging.DEBUG

    def received(self, data: bytes, src: Addr) -> None:
        self._guarded("in", data, src)

    def sent(self, data: bytes, dest: Addr) -> None:
        self._guarded("out", data, dest)

    def _guarded(self, direction: str, data: bytes, peer: Addr) -> None:
        """The lines of one datagram; a failure to write them must not touch the node's work
        (the runtime calls this beside the core, not inside its guard): said, then ignored."""
        try:
            self._datagram(direction, data, peer)
        except Exception:
            self.failures += 1
            if self.failures <= MAX_FAILURE_LINES:
                self._log_wire.exception("wirelog_failed", dir=direction, bytes=len(data))

    def _datagram(self, direction: str, data: bytes, peer: Addr) -> None:
        sealed = is_sealed(data)
        dgram, error = self._decode(data, sealed)
        where = wire.format_addr(peer)
        if self.datagrams:
            logs.trace(
                self._log_wire,
                "datagram",
                dir=direction,
                peer=where,
                bytes=len(data),
                sealed=sealed,
                sender=dgram.sender if dgram is not None else None,
                kinds=[kind_of(m) for m in dgram.m] if dgram is not None else None,
                undecodable=error,
            )
        if self.gossip and dgram is not None:
            event = "gossip_received" if direction == "in" else "gossip_sent"
            for msg in dgram.m:
                kind = kind_of(msg)
                if kind not in UPKEEP:
                    self._log_gossip.debug(event, kind=kind, peer=where, **describe(msg))

    def _decode(self, data: bytes, sealed: bool) -> tuple[wire.Datagram | None, str | None]:
        """The datagram, or None and why not (it is hostile input like any other)."""
        body = data
        if sealed:
            sealer = self._sealer()
            if sealer is None:
                return None, "sealed, and this node has no key"
            try:
                body = sealer.open(data).body
            except SealError as e:
                return None, f"does not open: {e.reason}"
        try:
            return wire.decode(body, self._max_size, self._max_depth), None
        except wire.WireError as e:
            return None, f"{e.reason}: {e.detail[:100]}"
