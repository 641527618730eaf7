"""The wire format: one UTF-8 JSON object per UDP datagram, decoded strictly.

    {"v": 1, "from": "<sender name>", "m": [<message>, ...]}

``v`` is the protocol version. Version 1 is plain JSON. With a key, this JSON travels
inside a sealed datagram (core/seal.py: its first byte 0x02, never ``{``), which a node
without the key rejects as "unsupported version" instead of misreading it. ``from`` names the sending node (absent on
datagrams from clients such as chatter-inject). ``m`` carries one or more messages, each
tagged by ``type``. Anything that does not match these shapes exactly is rejected with a
:class:`WireError` naming the reason; the caller drops the whole datagram and counts it.
"""

from __future__ import annotations

import msgspec

from chatterd.core import tags
from chatterd.core.addr import format_addr, parse_addr
from chatterd.core.bounds import U63, depth
from chatterd.core.config import (
    ENVELOPE_OVERHEAD,
    MAX_QUERY_ID,
    MAX_QUERY_NAME,
    MAX_QUERY_NODES,
    MAX_QUERY_TAGS,
    MAX_SUMMARY_GAPS,
    MAX_SUMMARY_STREAMS,
    MAX_TAG_REGEX,
    QUERY_DATA_MAX,
    QUERY_ERROR_MAX,
    QUERY_RESPONSE_MAX,
    QUERY_TIMEOUT_MAX,
)
from chatterd.core.digest import BUCKETS
from chatterd.core.messages import (
    Alive,
    Answer,
    Bucket,
    Coord,
    Dead,
    DeviceRecord,
    DigestMsg,
    Hash,
    Have,
    HeardCoord,
    Heartbeat,
    Inject,
    InjectAck,
    InjectNack,
    Join,
    Lease,
    Left,
    MemberRecord,
    Message,
    Ping,
    PingReq,
    Query,
    RoleClaim,
    RttAck,
    RttPing,
    Rumor,
    State,
    Suspect,
    Version,
    Vouch,
    Want,
)

VERSION = 1

# The messages are core/messages.py's; they are named here too (wire.Heartbeat...).
__all__ = [
    "VERSION",
    "Alive",
    "Answer",
    "Bucket",
    "Coord",
    "Datagram",
    "Dead",
    "DeviceRecord",
    "DigestMsg",
    "Hash",
    "Have",
    "HeardCoord",
    "Heartbeat",
    "Inject",
    "InjectAck",
    "InjectNack",
    "Join",
    "Lease",
    "Left",
    "MemberRecord",
    "Message",
    "Ping",
    "PingReq",
    "Query",
    "RoleClaim",
    "RttAck",
    "RttPing",
    "Rumor",
    "State",
    "Suspect",
    "Version",
    "Vouch",
    "Want",
    "WireError",
    "decode",
    "encode",
    "encode_message",
    "format_addr",
    "max_message_size",
    "pack",
    "parse_addr",
]


class Datagram(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    v: U63
    m: list[Message]
    # "from" is a Python keyword, hence the rename.
    sender: str | None = msgspec.field(default=None, name="from")


class WireError(ValueError):
    """A datagram that is not valid chatter wire format. ``reason`` is a short counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_decoder = msgspec.json.Decoder(Datagram)
_encoder = msgspec.json.Encoder()
MAX_HAVE_STREAMS = MAX_SUMMARY_STREAMS
MAX_HAVE_GAPS = MAX_SUMMARY_GAPS


def decode(data: bytes, max_size: int = 65_507, max_depth: int = 32) -> Datagram:
    """Decode one datagram strictly, or raise WireError."""
    if len(data) > max_size:
        raise WireError("oversize", f"{len(data)} bytes > {max_size}")
    if not data:
        raise WireError("empty", "zero-length datagram")
    try:
        dgram = _decoder.decode(data)
    except msgspec.ValidationError as e:
        # A version we do not speak gets its own reason, checked before the shape.
        try:
            v = msgspec.json.decode(data, type=dict).get("v")
        except Exception:
            v = VERSION
        if isinstance(v, int) and v != VERSION:
            raise WireError("version", f"unsupported protocol version {v}") from None
        raise WireError("invalid", str(e)) from None
    except msgspec.DecodeError as e:
        raise WireError("malformed", str(e)) from None
    except UnicodeDecodeError as e:
        raise WireError("malformed", f"invalid UTF-8: {e.reason}") from None
    except RecursionError:
        raise WireError("too_deep", "nesting exceeds the decoder's limit") from None
    if dgram.v != VERSION:
        raise WireError("version", f"unsupported protocol version {dgram.v}")
    if not dgram.m:
        raise WireError("invalid", "no messages")
    # No payload can nest deeper than the datagram has brackets: most datagrams carry far
    # fewer than max_depth, and counting bytes in C spares walking every payload.
    deep = data.count(b"{") + data.count(b"[") > max_depth
    for msg in dgram.m:
        _check(msg, max_depth if deep else None)
    return dgram


def _check(msg: Message, max_depth: int | None) -> None:
    """Semantic checks msgspec's types cannot express (max_depth None: nesting known to be fine).
    Integer ranges, member states and message types are the types' (see Bucket, U63, Epoch)."""
    if isinstance(msg, (Rumor, Inject, Query, Answer)):
        if max_depth is not None and depth(msg.payload) > max_depth:
            raise WireError("too_deep", f"payload nesting > {max_depth}")
        if isinstance(msg, (Query, Answer)):
            _check_query(msg)
    elif isinstance(msg, (Alive, Join)):
        _check_name(msg.node)
        _check_tags(msg.tags)
    elif isinstance(msg, (Suspect, Dead, Left, PingReq, Vouch)):
        _check_name(msg.node)
    elif isinstance(msg, State):
        for rec in msg.members:
            _check_name(rec.node)
            _check_tags(rec.tags)
        for claim in msg.roles:
            _check_claim(claim.role, claim.holder, claim.epoch)
    elif isinstance(msg, DigestMsg):
        if len(msg.h) != BUCKETS:
            raise WireError("invalid", f"digest must have {BUCKETS} buckets")
    elif isinstance(msg, RoleClaim):
        _check_claim(msg.role, msg.holder, msg.epoch)
    elif isinstance(msg, Have):
        if len(msg.s) > MAX_HAVE_STREAMS or any(len(e[4]) > MAX_HAVE_GAPS for e in msg.s):
            raise WireError("invalid", "too many streams or gaps in have")
    elif isinstance(msg, Want):
        if len(msg.buckets) > BUCKETS:
            raise WireError("invalid", "too many buckets in want")


def _check_query(msg: Query | Answer) -> None:
    if not 0 < len(msg.id) <= MAX_QUERY_ID:
        raise WireError("invalid", "query id empty or too long")
    if isinstance(msg, Query):
        _check_name(msg.origin)
        if not 0 < len(msg.name) <= MAX_QUERY_NAME or msg.timeout > QUERY_TIMEOUT_MAX * 1000:
            raise WireError("invalid", "query name empty or too long, or timeout too long")
        if len(msg.data) > QUERY_DATA_MAX or len(msg.nodes) > MAX_QUERY_NODES or len(msg.tags) > MAX_QUERY_TAGS:
            raise WireError("invalid", "query data too long, or too many filters")
        if not all(0 < len(n) <= MAX_QUERY_NAME for n in msg.nodes):
            raise WireError("invalid", "empty or too long member name in a query filter")
        if not all(0 < len(k) <= MAX_QUERY_NAME and 0 < len(p) <= MAX_TAG_REGEX for k, p in msg.tags.items()):
            raise WireError("invalid", "empty or too long tag filter in a query")
    else:
        _check_name(msg.node)
        if len(msg.error) > QUERY_ERROR_MAX or len(msg.data) > QUERY_RESPONSE_MAX or len(msg.to) > MAX_QUERY_NAME:
            raise WireError("invalid", "answer error, data or relay name too long")
        if msg.ack and (msg.data or msg.error or msg.payload):
            raise WireError("invalid", "an acknowledgement carries nothing")


def _check_name(node: str) -> None:
    if not node:
        raise WireError("invalid", "empty member name")


def _check_claim(role: str, holder: str, epoch: int) -> None:
    """A role claim, standalone (RoleClaim) or inside State: the same rules."""
    if not role or not holder or epoch < 1:
        raise WireError("invalid", "empty role or holder, or epoch < 1 in role claim")


def _check_tags(t: dict[str, str]) -> None:
    if t:
        reason = tags.problem(t)
        if reason is not None:
            raise WireError("tags", reason)


def encode_message(msg: msgspec.Struct) -> bytes:
    """One message, or one record of a State chunk, encoded."""
    return _encoder.encode(msg)


def encode(messages: list[Message], sender: str | None = None) -> bytes:
    return _encoder.encode(Datagram(v=VERSION, m=messages, sender=sender))


def pack(encoded: list[bytes], sender: str | None, max_size: int) -> list[bytes]:
    """Pack already-encoded messages into as few datagrams of at most max_size as possible.

    A message too big to fit in a datagram on its own is sent alone (callers keep messages
    under the limit; see :func:`max_message_size`).
    """
    head = _encoder.encode(Datagram(v=VERSION, m=[], sender=sender))
    # head ends with b'"m":[]}' or similar; split around the empty list.
    i = head.index(b"[]")
    prefix, suffix = head[: i + 1], head[i + 1 :]
    out: list[bytes] = []
    batch: list[bytes] = []
    size = len(prefix) + len(suffix)
    for m in encoded:
        extra = len(m) + (1 if batch else 0)
        if batch and size + extra > max_size:
            out.append(prefix + b",".join(batch) + suffix)
            batch, size = [], len(prefix) + len(suffix)
            extra = len(m)
        batch.append(m)
        size += extra
    if batch:
        out.append(prefix + b",".join(batch) + suffix)
    return out


def max_message_size(max_datagram: int) -> int:
    """Largest encoded message that still fits in one datagram with its envelope."""
    return max_datagram - ENVELOPE_OVERHEAD
