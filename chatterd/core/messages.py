"""The messages of the wire format (core/wire.py carries them in datagrams and decodes them).

Each message is a msgspec struct tagged by ``type``; unknown fields are refused and default
values are left out on the wire. Every integer is bounded by its type (core/bounds.py), so
that msgspec's typed decoding is the first half of the strict validation; wire.py does the
checks types cannot express.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from chatterd.core.bounds import U63, Epoch
from chatterd.core.config import MAX_RELAY_FACTOR
from chatterd.core.coordinates import (
    COORD_DIMENSIONS,
    COORD_ERROR_WIRE_MAX,
    COORD_NAME_MAX,
    COORD_WIRE_MAX,
    RTT_GOSSIP_MAX,
)
from chatterd.core.digest import BUCKETS
from chatterd.core.membership import MemberState
from chatterd.core.roles import Claim

# Every integer on the wire is bounded (core/bounds.py: U63, Epoch, and these).
Bucket = Annotated[int, msgspec.Meta(ge=0, lt=BUCKETS)]
Hash = Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFFFF)]  # a 32-bit digest signature XOR

# How many other members a query's responder sends its answer through (core/userquery.py).
Relay = Annotated[int, msgspec.Meta(ge=0, le=MAX_RELAY_FACTOR)]

# A message version: (Lamport time, message id). Totally ordered, consistent with causality.
Version = tuple[U63, str]


class _Msg(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, omit_defaults=True):
    pass


class Heartbeat(_Msg, tag="hb"):
    """'I am alive at this incarnation', sent to each of the sender's monitors."""

    inc: U63


class Ping(_Msg, tag="ping"):
    """'Are you there?' from a monitor that missed our heartbeat (core/probe.py), or from a
    relay asked to check us: answered with a Heartbeat to its sender."""


class PingReq(_Msg, tag="ping-req"):
    """'Check ``node`` for me' (core/probe.py): the receiver answers with a Vouch if it heard
    ``node`` lately, or pings it and vouches once it answers."""

    node: str


class Vouch(_Msg, tag="vouch"):
    """'``node`` was heard from ``ago`` ms ago': the answer to a PingReq. The asker counts the
    member heard at that moment, not at the vouch's arrival: a vouch must not add the relay's
    delay to a dead member's silence (clamped to suspect_after on arrival)."""

    node: str
    ago: U63 = 0


# A coordinate component on the wire, in µs (core/coordinates.py keeps seconds as floats).
CoordUs = Annotated[int, msgspec.Meta(ge=-COORD_WIRE_MAX, le=COORD_WIRE_MAX)]


class Coord(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """A Vivaldi coordinate (core/coordinates.py), as integers, in an array to keep it small:
    ``[[8 components, µs], error (thousandths), adjustment (µs), height (µs)]``. Ints only, so
    every value that decodes is finite and bounded; the dimension count is fixed."""

    vec: Annotated[list[CoordUs], msgspec.Meta(min_length=COORD_DIMENSIONS, max_length=COORD_DIMENSIONS)]
    error: Annotated[int, msgspec.Meta(ge=0, le=COORD_ERROR_WIRE_MAX)]
    adjustment: CoordUs
    height: Annotated[int, msgspec.Meta(ge=0, le=COORD_WIRE_MAX)]


class HeardCoord(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """``[member, coordinate]``: a member's coordinate as the sender last had it from it."""

    node: Annotated[str, msgspec.Meta(min_length=1, max_length=COORD_NAME_MAX)]
    c: Coord


class RttPing(_Msg, tag="rtt"):
    """A round-trip probe for network coordinates (core/rtt.py), answered with an RttAck
    echoing ``t`` (a random token: the asker times the round trip itself, nothing from the
    peer's clock is used). No coordinate: the asker's is of no use to the answerer, and the
    bytes count (issue #13's idle budget)."""

    t: Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFFFF)]


class RttAck(_Msg, tag="rtt-ack"):
    """The answer to an RttPing: its token, the answering node's coordinate and, gossiped, up
    to RTT_GOSSIP_MAX coordinates it got first-hand from other members."""

    t: Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFFFF)]
    c: Coord
    # Coordinates the answerer measured of other members (core/rtt.py gossip), a few at most.
    g: Annotated[list[HeardCoord], msgspec.Meta(max_length=RTT_GOSSIP_MAX)] = []


class Lease(_Msg, tag="lease"):
    """'Answer me': sent every lease interval to every member by a role candidate under
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
    """``node`` left, at incarnation ``inc``: from itself (a graceful leave) or from any member
    for a member it believes dead (``chatterd force-leave``, core/forceleave.py). ``prune``
    also erases the member from every table at once (force-leave --prune)."""

    node: str
    inc: U63
    prune: bool = False


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
    # User queries (core/userquery.py): the request, the filters each receiver applies to
    # itself (member names; tag key -> regular expression), whether to acknowledge on
    # receipt, and through how many other members to send the response too.
    data: str = ""
    nodes: list[str] = []
    tags: dict[str, str] = {}
    ack: bool = False
    relay: Relay = 0


class Answer(_Msg, tag="answer"):
    """One member's answer to a Query, sent to its origin."""

    id: str
    node: str
    payload: dict[str, Any] = {}
    error: str = ""
    # User queries: an acknowledgement (nothing else in it), or the response ``data``; ``to``
    # names the asker on a copy sent through another member, which passes it on to the
    # asker's address in its own member table.
    ack: bool = False
    data: str = ""
    to: str = ""


Message = (
    Heartbeat
    | Ping
    | PingReq
    | Vouch
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
    | RttPing
    | RttAck
)
