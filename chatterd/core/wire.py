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

from typing import Annotated, Any

import msgspec

from chatterd.core import tags
from chatterd.core.addr import format_addr, parse_addr  # noqa: F401  (wire.parse_addr: the shells use it)
from chatterd.core.bounds import U63, Epoch, depth
from chatterd.core.config import (
    ENVELOPE_OVERHEAD,
    MAX_QUERY_ID,
    MAX_QUERY_NAME,
    MAX_SUMMARY_GAPS,
    MAX_SUMMARY_STREAMS,
    QUERY_ERROR_MAX,
    QUERY_TIMEOUT_MAX,
)
from chatterd.core.digest import BUCKETS
from chatterd.core.membership import MemberState
from chatterd.core.roles import Claim

VERSION = 1

# Every integer on the wire is bounded (core/bounds.py: U63, Epoch, and these).
Bucket = Annotated[int, msgspec.Meta(ge=0, lt=BUCKETS)]
Hash = Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFFFF)]  # a 32-bit digest signature XOR

# A message version: (Lamport time, message id). Totally ordered, consistent with causality.
Version = tuple[U63, str]


class _Msg(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, omit_defaults=True):
    pass


class Heartbeat(_Msg, tag="hb"):
    """'I am alive at this incarnation', sent to each of the sender's monitors."""

    inc: U63


class Lease(_Msg, tag="lease"):
    """'Answer me': sent every heartbeat interval to every member by a role candidate under
    --expect, which counts the answers (any datagram) as its quorum (core/node.py)."""

    inc: U63


class Alive(_Msg, tag="alive"):
    node: str
    id: str
    addr: str
    inc: U63
    tags: dict[str, str] = {}  # omitted when empty (see core/tags.py)


class Suspect(_Msg, tag="suspect"):
    node: str
    inc: U63
    by: str


class Dead(_Msg, tag="dead"):
    node: str
    inc: U63
    by: str


class Left(_Msg, tag="left"):
    node: str
    inc: U63


class Rumor(_Msg, tag="rumor"):
    """An application message spread by rumor mongering and delivered once per node."""

    id: str
    origin: str  # name of the node that accepted it into the cluster
    ts: U63  # origin's wall clock, Unix milliseconds (chatter-rs's timestamp_millis)
    lt: U63  # origin's Lamport time: orders device updates
    hops: U63  # forwarded while > 0, decremented at each hop
    payload: dict[str, Any]
    # Position in the origin's numbered stream (core/repair.py); 0 = not numbered.
    boot: U63 = 0  # the origin's start time, Unix ms: a restart opens a new stream
    seq: U63 = 0


class Join(_Msg, tag="join"):
    """A node asks a seed to be let in; the seed answers with its state. ``pad`` (spaces,
    ignored) makes the datagram as big as the first answer may be: a node answers an address
    that is not a member's with at most the bytes it received (no reflection)."""

    node: str
    id: str
    addr: str
    inc: U63
    tags: dict[str, str] = {}
    pad: str = ""


class MemberRecord(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    node: str
    id: str
    addr: str
    inc: U63
    state: MemberState
    tags: dict[str, str] = {}


class DeviceRecord(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A device as a set of last-writer-wins fields, each with the version that set it."""

    origin: str
    name: str
    description: str = ""
    description_v: Version = (0, "")
    metrics: dict[str, Any] = {}
    metrics_v: Version = (0, "")
    present_v: Version = (0, "")  # newest DeviceAdded/DeviceStatus
    removed_v: Version = (0, "")  # newest DeviceRemoved


class State(_Msg, tag="state"):
    """One chunk of a push-pull exchange. ``reply`` asks the receiver to answer in kind."""

    members: list[MemberRecord] = []
    devices: list[DeviceRecord] = []
    roles: list[Claim] = []
    reply: bool = False


class DigestMsg(_Msg, tag="digest"):
    """Anti-entropy, step 1: the sender's 64 bucket hashes (see core/digest.py)."""

    h: list[Hash]


class Want(_Msg, tag="want"):
    """Anti-entropy, step 2: 'send me your records in these buckets'."""

    buckets: list[Bucket]


class RoleClaim(_Msg, tag="role"):
    """'``holder`` holds ``role`` from ``epoch`` on' (core/roles.py), gossiped like member news."""

    role: str
    holder: str
    epoch: Epoch
    ts: U63


class Have(_Msg, tag="have"):
    """Repair of missed rumors (core/repair.py): the sender's recent streams, each as
    [origin, boot, low seq, high seq, [missing seqs]]. ``all`` says every stream is listed;
    ``since`` (Unix ms) is when the sender joined; ``reply`` marks an answer to a Have."""

    s: list[tuple[str, U63, U63, U63, list[U63]]]
    since: U63
    all: bool = True
    reply: bool = False


class Inject(_Msg, tag="inject"):
    """From chatter-inject: spread this payload. ``rid`` makes retries idempotent."""

    rid: str
    payload: Any
    hops: U63 | None = None
    pad: str = ""  # spaces, ignored: room for the answer (see Join)


class InjectAck(_Msg, tag="inject-ack"):
    rid: str
    id: str
    node: str


class InjectNack(_Msg, tag="inject-nack"):
    rid: str
    error: str


class Query(_Msg, tag="query"):
    """A question for every member (core/query.py), spread like news. Each member answers
    ``origin`` once, straight to the address it has for it; ``again`` marks the asker's direct
    second try to a member that has not answered (it gets its answer again)."""

    id: str
    origin: str
    name: str
    ts: U63  # the origin's wall clock when it asked, Unix ms
    timeout: U63  # ms: answers after ts + timeout are not awaited
    payload: dict[str, Any] = {}
    again: bool = False


class Answer(_Msg, tag="answer"):
    """One member's answer to a Query, sent to its origin."""

    id: str
    node: str
    payload: dict[str, Any] = {}
    error: str = ""


Message = (
    Heartbeat
    | Lease
    | Alive
    | Suspect
    | Dead
    | Left
    | Rumor
    | Join
    | State
    | DigestMsg
    | Want
    | Have
    | RoleClaim
    | Inject
    | InjectAck
    | InjectNack
    | Query
    | Answer
)


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
    elif isinstance(msg, (Suspect, Dead, Left)):
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
    else:
        _check_name(msg.node)
        if len(msg.error) > QUERY_ERROR_MAX:
            raise WireError("invalid", "answer error too long")


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
