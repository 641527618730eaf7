"""What the core tells its shell: things that happened, as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """A member changed state as seen by this node.

    kind: member-join, member-leave, member-failed, member-recover, member-suspect,
    member-alive (a suspicion refuted) or member-update (address, id or tags changed).
    """

    kind: str
    node: str
    id: str
    addr: str
    inc: int
    state: str
    by: str | None = None  # who accused it, for suspect/failed
    after_s: float | None = None  # for member-failed: seconds since it was last heard
    tags: dict[str, str] = field(default_factory=dict, hash=False)  # the member's tags


@dataclass(frozen=True, slots=True)
class Delivery:
    """An application message delivered here (exactly once per node)."""

    id: str
    kind: str  # debug, device, view, user
    origin: str
    ts: int
    hops: int
    payload: dict[str, Any] = field(hash=False)


@dataclass(frozen=True, slots=True)
class RoleEvent:
    """This node acquired or lost a role (core/roles.py).

    kind: role-acquired or role-lost. ``epoch`` is the fencing token of this node's tenure.
    """

    kind: str
    role: str
    holder: str
    epoch: int
    reason: str


@dataclass(frozen=True, slots=True)
class KeysResult:
    """The end of a ``chatterd keys`` operation started on this node (core/keys.py).

    ``asked``: the members live when it began; ``answered``: those that answered, with the
    ``errors`` some gave (member -> text); ``keys`` / ``primary``: how many of them hold each
    key, and use it as their primary (base64 -> count). ``refused`` says why the operation was
    not carried out (``remove`` of a key some member still uses); then nothing changed.
    """

    id: str
    op: str
    key: str | None
    asked: list[str] = field(default_factory=list, hash=False)
    answered: list[str] = field(default_factory=list, hash=False)
    errors: dict[str, str] = field(default_factory=dict, hash=False)
    keys: dict[str, int] = field(default_factory=dict, hash=False)
    primary: dict[str, int] = field(default_factory=dict, hash=False)
    refused: str = ""

    @property
    def missing(self) -> list[str]:
        return [n for n in self.asked if n not in self.answered]


@dataclass(frozen=True, slots=True)
class QueryRequest:
    """A user query this node has a handler for (core/userquery.py): the shell runs it and
    gives its output to ``Node.query_respond`` within ``timeout`` seconds."""

    id: str
    name: str
    origin: str
    data: str
    timeout: float


@dataclass(frozen=True, slots=True)
class QueryUpdate:
    """News of a user query this node asked, as it comes (core/userquery.py).

    kind: ``ack`` (``node`` received it), ``response`` (``node`` answered: ``data``, or the
    ``error`` it gave), each with ``rtt``, seconds since the query was asked; ``done`` (the
    end: ``asked``, the members it was for as this node saw them, and ``acked``,
    ``answered`` and ``silent``, those never heard from)."""

    id: str
    kind: str
    node: str = ""
    rtt: float = 0.0
    data: str = ""
    error: str = ""
    asked: tuple[str, ...] = ()
    acked: tuple[str, ...] = ()
    answered: tuple[str, ...] = ()
    silent: tuple[str, ...] = ()


Event = MemberEvent | Delivery | RoleEvent | KeysResult | QueryRequest | QueryUpdate
