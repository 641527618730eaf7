"""User queries, as ``serf query``: a named question with a payload, for the members its
filters pick (core/queryfilter.py), each of which acknowledges it on receipt and may answer.

It rides on core/query.py: the asker gossips a :class:`~chatterd.core.wire.Query` carrying
the name, the payload (``data``), the filters, ``ack`` and ``relay``. Every member that sees
it passes it on (a member the filters leave out too), and a member the filters pick sends
an ``ack`` :class:`~chatterd.core.wire.Answer` at once to the asker's address in its own
member table (never to an address the query names), and, if its shell has a handler for the
name (``--event-handler query:NAME=COMMAND``), a :class:`~chatterd.core.events.QueryRequest`
goes to the shell, whose answer (:meth:`UserQueries.respond`) is sent to the asker as the
response: directly, and through ``relay`` other random live members (each passes the copy on
to the asker's address as it knows it). The asker counts each member once.

The asker emits :class:`~chatterd.core.events.QueryUpdate` events as acks and responses come,
and one ``done`` at the end: at the timeout, or sooner once every member it expected (the
live ones its filters pick in its own table) has responded (for ``_reach``: acknowledged).
At each quarter of the timeout it asks the members it has not heard from again, directly;
they send again what they sent (core/query.py keeps it with the query's id).

Bounds on every node: MAX_PENDING_USER_QUERIES asked at once, MAX_ANSWERING being answered
by the handlers (beyond, an error answer says the node is busy), MAX_QUERY_ANSWERS recorded
per query; sizes and filters are checked by the wire decoder.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from chatterd.core import wire
from chatterd.core.config import (
    MAX_ANSWERING,
    MAX_PENDING_USER_QUERIES,
    MAX_QUERY_ANSWERS,
    MAX_RELAY_FACTOR,
    QUERY_DATA_MAX,
    QUERY_ERROR_MAX,
    QUERY_RESPONSE_MAX,
    QUERY_TIMEOUT_MAX,
    USER_QUERY_NAME_MAX,
    USER_QUERY_TIMEOUT_MULT,
    USER_QUERY_UNIT,
    Config,
)
from chatterd.core.context import Context, Part
from chatterd.core.events import QueryRequest, QueryUpdate
from chatterd.core.gossip import Gossip
from chatterd.core.membership import LIVE
from chatterd.core.query import Queries, QueryError
from chatterd.core.queryfilter import FilterError, compile_filters
from chatterd.core.rtt import RoundTrips

Addr = tuple[str, int]

# `chatterd reachability`: every live member acknowledges; no handler can take the name.
REACH_QUERY = "_reach"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")


def check_name(name: str) -> str:
    """A user query's name, or QueryError: letters, digits and ``_.:-``, not first (names
    starting with ``_`` are the node's own), at most USER_QUERY_NAME_MAX characters."""
    if not 0 < len(name) <= USER_QUERY_NAME_MAX or not _NAME.fullmatch(name):
        raise QueryError(
            f"invalid query name {name[:USER_QUERY_NAME_MAX]!r}: 1 to {USER_QUERY_NAME_MAX} letters, digits "
            "and _.:- (not first)"
        )
    return name


def default_timeout(cfg: Config, members: int, slowest_rtt: float = 0.0) -> float:
    """Serf's GossipInterval * QueryTimeoutMult * ceil(log10(N + 1)), with our unit (config.py),
    plus two of the longest round trips the network coordinates estimate to a member (the query
    reaches it by gossip, its answer comes straight back; a relay may add a leg): a slow link
    gets the time it needs, a LAN (rtt well under a millisecond) nothing noticeable."""
    unit = max(cfg.gossip_interval * USER_QUERY_TIMEOUT_MULT, USER_QUERY_UNIT)
    base = unit * max(1, math.ceil(math.log10(members + 1)))
    return min(base + 2 * min(max(slowest_rtt, 0.0), QUERY_TIMEOUT_MAX), QUERY_TIMEOUT_MAX)


def check_timeout(value: Any) -> float | None:
    """A timeout in seconds from JSON, a query string or a command line (None: the default); raises QueryError."""
    if value is None:
        return None
    try:
        t = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        t = math.nan
    if not 0 < t <= QUERY_TIMEOUT_MAX:  # nan fails too
        raise QueryError(f"the timeout must be a number of seconds above 0 and at most {QUERY_TIMEOUT_MAX:g}")
    return t


@dataclass(frozen=True)
class UserQuery:
    """What to ask: the name, the payload, the filters, and how."""

    name: str
    data: str = ""
    nodes: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    ack: bool = True
    relay: int = 0
    timeout: float | None = None  # None: default_timeout for the cluster's size


@dataclass
class _Asked:
    msg: wire.Query
    started: float
    deadline: float
    again_at: float | None
    every: float
    expected: list[str]
    acks: dict[str, float] = field(default_factory=dict)  # member -> rtt
    responses: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Answering:
    origin: str
    relay: int
    until: float


class UserQueries(Part):
    def __init__(self, ctx: Context, queries: Queries, gossip: Gossip, rtt: RoundTrips) -> None:
        super().__init__(ctx)
        self.queries = queries
        self.gossip = gossip
        self.rtt = rtt  # the network coordinates: the default timeout allows for a slow link
        self.handled: frozenset[str] = frozenset()  # the names the shell has handlers for
        self.asked: dict[str, _Asked] = {}
        self.answering: dict[str, _Answering] = {}
        queries.user = self

    def live_count(self) -> int:
        return sum(1 for m in self.table.members.values() if m.state in LIVE)

    def slowest_rtt(self) -> float:
        """The longest round trip estimated from here to a live member, 0 if none is known."""
        me = self.local.name
        rtts = (self.rtt.estimate(me, m.name, heard=False) for m in self.table.members.values() if m.state in LIVE)
        return max((r for r in rtts if r is not None), default=0.0)

    # ------------------------------------------------------------------ asking

    def ask(self, q: UserQuery, now: float, *, internal: bool = False) -> str:
        """Put ``q`` to the members its filters pick; QueryUpdate events follow. Returns the
        query's id. Raises QueryError (nothing was asked)."""
        if not internal:
            check_name(q.name)
        if q.timeout is not None:
            timeout = q.timeout
        else:
            timeout = default_timeout(self.cfg, self.live_count(), self.slowest_rtt())
        if not 0 < timeout <= QUERY_TIMEOUT_MAX:
            raise QueryError(f"the timeout must be above 0 and at most {QUERY_TIMEOUT_MAX:g} s")
        size = len(q.data.encode())
        if size > QUERY_DATA_MAX:
            raise QueryError(f"the payload is {size} bytes, over the {QUERY_DATA_MAX}-byte limit")
        if not 0 <= q.relay <= MAX_RELAY_FACTOR:
            raise QueryError(f"the relay factor must be 0 to {MAX_RELAY_FACTOR}")
        try:
            filters = compile_filters(q.nodes, q.tags)
        except FilterError as e:
            raise QueryError(str(e)) from None
        if len(self.asked) >= MAX_PENDING_USER_QUERIES:
            raise QueryError(f"too many queries in flight (at most {MAX_PENDING_USER_QUERIES}): try again shortly")
        if self.local.leaving:
            raise QueryError("the node is leaving")
        me = self.local.name
        qid = uuid.UUID(int=self.rng.getrandbits(128), version=4).hex
        msg = wire.Query(
            id=qid, origin=me, name=q.name, ts=self.local.wall_ms(now), timeout=int(timeout * 1000), data=q.data,
            nodes=sorted(filters.nodes), tags=dict(sorted(q.tags.items())), ack=q.ack, relay=q.relay,
        )  # fmt: skip
        limit = wire.max_message_size(self.cfg.max_datagram)
        if len(wire.encode_message(msg)) > limit:
            raise QueryError(f"the query with its filters is over the {limit}-byte limit of a datagram")
        try:  # our own table, judged as each member will judge itself
            live = [m for m in self.table.members.values() if m.state in LIVE]
            expected = sorted(m.name for m in live if filters.matches(m.name, m.tags))
        except FilterError as e:
            raise QueryError(str(e)) from None
        a = _Asked(msg, now, now + timeout, now + timeout / 4, timeout / 4, expected)
        self.asked[qid] = a
        self.queries.seen.add(qid, now)
        if me in expected:
            if q.ack:
                self._heard_ack(qid, a, me, now)
            self._request(msg, now, now + timeout)
        self.gossip.broadcast("q:" + qid, msg, now)
        self._finish_if_complete(qid, a, now)
        return qid

    def reachability(self, timeout: float | None, now: float) -> str:
        """Ask every live member to acknowledge, nothing more (``chatterd reachability``)."""
        return self.ask(UserQuery(REACH_QUERY, timeout=timeout), now, internal=True)

    def on_answer(self, msg: wire.Answer, src: Addr, now: float) -> bool:
        """An ack or a response for a query we asked (False: not one of ours)."""
        a = self.asked.get(msg.id)
        if a is None:
            return False
        if msg.to:  # through a relay: from a member's address, whichever
            if not self.table.has_addr(src):
                self.fx.drop("source", "answer_dropped")
                return True
        else:
            m = self.table.get(msg.node)
            if m is None or m.addr != src:
                self.fx.drop("source", "answer_dropped")
                return True
        if msg.ack:
            self._heard_ack(msg.id, a, msg.node, now)
        else:
            self._heard_response(msg.id, a, msg.node, msg.data, msg.error, now)
        self._finish_if_complete(msg.id, a, now)
        return True

    def _heard_ack(self, qid: str, a: _Asked, node: str, now: float) -> None:
        if node in a.acks or len(a.acks) >= MAX_QUERY_ANSWERS:
            self.fx.stats["answer_duplicates"] += 1
            return
        a.acks[node] = now - a.started
        self.fx.emit(QueryUpdate(qid, "ack", node, now - a.started))

    def _heard_response(self, qid: str, a: _Asked, node: str, data: str, error: str, now: float) -> None:
        if node in a.responses or len(a.responses) >= MAX_QUERY_ANSWERS:
            self.fx.stats["answer_duplicates"] += 1  # a relayed copy, most often
            return
        a.responses.add(node)
        self.fx.emit(QueryUpdate(qid, "response", node, now - a.started, data, error))

    def _finish_if_complete(self, qid: str, a: _Asked, now: float) -> None:
        heard = a.acks if a.msg.name == REACH_QUERY else a.responses
        for name in a.expected:
            m = self.table.get(name)
            if name not in heard and m is not None and m.state in LIVE:
                return
        self._finish(qid, a)

    def _finish(self, qid: str, a: _Asked) -> None:
        del self.asked[qid]
        self.fx.stats["user_queries_done"] += 1
        heard = set(a.acks) | a.responses
        asked = tuple(sorted(set(a.expected) | heard))
        silent = tuple(n for n in a.expected if n not in heard)
        acked, answered = tuple(sorted(a.acks)), tuple(sorted(a.responses))
        self.fx.emit(QueryUpdate(qid, "done", asked=asked, acked=acked, answered=answered, silent=silent))

    def tick(self, now: float) -> None:
        for qid, a in list(self.asked.items()):
            if now >= a.deadline:
                self.fx.stats["user_queries_timed_out"] += 1
                self._finish(qid, a)
            elif a.again_at is not None and now >= a.again_at:
                a.again_at = now + a.every
                if a.again_at >= a.deadline:
                    a.again_at = None
                self._ask_again(a)
        for qid, b in list(self.answering.items()):
            if now >= b.until:
                del self.answering[qid]
                self.fx.stats["query_requests_expired"] += 1  # the handler did not answer in time

    def _ask_again(self, a: _Asked) -> None:
        again = msgspec.structs.replace(a.msg, again=True)
        for name in a.expected:
            if name in a.acks or name in a.responses or name == self.local.name:
                continue
            m = self.table.get(name)
            if m is not None and m.state in LIVE:
                self.fx.stats["queries_asked_again"] += 1
                self.fx.send_msg(again, m.addr)

    def deadline(self) -> float | None:
        times = [t for a in self.asked.values() for t in (a.deadline, a.again_at) if t is not None]
        times += [b.until for b in self.answering.values()]
        return min(times) if times else None

    # ------------------------------------------------------------------ answering

    def on_query(self, msg: wire.Query, now: float) -> bytes | None:
        """A query seen for the first time, from a live origin (core/query.py passed it on):
        the datagram to send the asker now and again if asked (None: nothing to send)."""
        try:
            filters = compile_filters(msg.nodes, msg.tags)
            picked = filters.matches(self.local.name, self.local.tags)
        except FilterError:
            self.fx.drop("filter", "query_dropped")
            return None
        if not picked:
            self.fx.stats["queries_filtered_out"] += 1
            return None
        me = self.local.name
        until = now + max(0.0, (msg.ts + msg.timeout - self.local.wall_ms(now)) / 1000)
        if msg.name in self.handled:
            if len(self.answering) >= MAX_ANSWERING:
                self.fx.stats["queries_busy"] += 1
                return wire.encode([self._response(msg.id, "", "too many queries being answered on this node")], me)
            self._request(msg, now, until)
        if not msg.ack:
            return None
        return wire.encode([wire.Answer(id=msg.id, node=me, ack=True)], me)

    def _request(self, msg: wire.Query, now: float, until: float) -> None:
        """Hand the query to the shell's handler, if it has one for the name."""
        if msg.name not in self.handled or len(self.answering) >= MAX_ANSWERING:
            return
        self.answering[msg.id] = _Answering(msg.origin, msg.relay, until)
        self.fx.emit(QueryRequest(msg.id, msg.name, msg.origin, msg.data, until - now))

    def respond(self, qid: str, data: str, error: str, now: float) -> bool:
        """The shell's handler answered ``qid``: send it to the asker (and through its relays).
        False when the query is no longer waited for (too late, or never asked)."""
        b = self.answering.pop(qid, None)
        if b is None:
            self.fx.stats["query_responses_too_late"] += 1
            return False
        me = self.local.name
        size = len(data.encode())
        if size > QUERY_RESPONSE_MAX:
            data, error = "", f"the response is {size} bytes, over the {QUERY_RESPONSE_MAX}-byte limit"
        if b.origin == me:
            a = self.asked.get(qid)
            if a is not None:
                self._heard_response(qid, a, me, data, error[:QUERY_ERROR_MAX], now)
                self._finish_if_complete(qid, a, now)
            return True
        answer = self._response(qid, data, error)
        dgram = wire.encode([answer], me)
        self.queries.seen.set(qid, dgram)
        self.queries.send_answer(b.origin, dgram)
        self.fx.stats["query_responses"] += 1
        if b.relay:
            self._relay(b, msgspec.structs.replace(answer, to=b.origin))
        return True

    def _response(self, qid: str, data: str, error: str) -> wire.Answer:
        me = self.local.name
        answer = wire.Answer(id=qid, node=me, data=data, error=error[:QUERY_ERROR_MAX])
        # Room for the relays' copies, which name the asker too.
        if len(wire.encode_message(answer)) > wire.max_message_size(self.cfg.max_datagram) - USER_QUERY_NAME_MAX:
            answer = wire.Answer(id=qid, node=me, error="the response is too big for a datagram")
        return answer

    def _relay(self, b: _Answering, relayed: wire.Answer) -> None:
        """The response through ``relay`` other live members, each told to pass it to the asker."""
        me = self.local.name
        others = [m for m in self.table.members.values() if m.state in LIVE and m.name not in (me, b.origin)]
        data = wire.encode([relayed], me)
        for m in self.rng.sample(others, min(b.relay, len(others))):
            self.fx.stats["query_responses_relayed"] += 1
            self.fx.send(data, m.addr)

    def set_handled(self, names: Iterable[str]) -> None:
        self.handled = frozenset(names)
