"""Queries: a question put to every member, each answering the one who asked, as Serf's
queries do. The keyring operations of ``chatterd keys`` (core/keys.py) are built on it.

The asker gossips a :class:`~chatterd.core.wire.Query` like any news (core/gossip.py). A
member that sees it for the first time passes it on, runs the handler registered for its
name, and sends its :class:`~chatterd.core.wire.Answer` to the asker's address in its own
member table: never to an address the query names (no reflection), and never to a stranger.
The asker waits for the members that were live when it asked. One that has not answered is
asked again, directly, at each quarter of the timeout, and answers again from what it
remembers (a handler runs once per query on each node). The query ends when every awaited member has
answered or is gone, or at the timeout; its result lists the answers and the silent.

A handler registered ``sealed_only`` (the keyring operations: they carry keys) runs only for
a query that arrived sealed at a node that seals what it sends: during a rolling move from
plaintext no one can forge it, and no node passes it on in the clear.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from chatterd.core import wire
from chatterd.core.config import MAX_PENDING_QUERIES, MAX_QUERY_IDS, QUERY_ERROR_MAX, QUERY_TIMEOUT, QUERY_TIMEOUT_MAX
from chatterd.core.context import Context, Part
from chatterd.core.dedup import SeenSet
from chatterd.core.gossip import Gossip
from chatterd.core.membership import LIVE

if TYPE_CHECKING:
    from chatterd.core.userquery import UserQueries

Addr = tuple[str, int]
# What a node answers to a query: (payload, now) -> (answer payload, error text or "").
Handler = Callable[[dict[str, Any], float], tuple[dict[str, Any], str]]


class QueryError(ValueError):
    """A query that cannot be asked; the text says why."""


@dataclass
class QueryResult:
    id: str
    name: str
    asked: list[str]  # the members live when it was asked, the asker included
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # member -> its answer
    errors: dict[str, str] = field(default_factory=dict)  # member -> why it could not answer

    @property
    def missing(self) -> list[str]:
        return [n for n in self.asked if n not in self.answers]


@dataclass
class _Pending:
    result: QueryResult
    msg: wire.Query
    deadline: float
    again_at: float | None
    again_every: float
    on_done: Callable[[QueryResult, float], None]


@dataclass(frozen=True)
class _Spec:
    handler: Handler
    sealed_only: bool


class Queries(Part):
    def __init__(self, ctx: Context, gossip: Gossip) -> None:
        super().__init__(ctx)
        self.gossip = gossip
        self.specs: dict[str, _Spec] = {}
        self.pending: dict[str, _Pending] = {}
        # Ids of the queries seen (for QUERY_TIMEOUT_MAX), each with our answer's datagram.
        self.seen: SeenSet[bytes] = SeenSet(QUERY_TIMEOUT_MAX, MAX_QUERY_IDS)
        self.sealed_input = False  # the node says, for each datagram, whether it came sealed
        self.user: UserQueries | None = None  # the queries of names no spec has (core/userquery.py)

    def register(self, name: str, handler: Handler, *, sealed_only: bool = False) -> None:
        self.specs[name] = _Spec(handler, sealed_only)

    def seals(self) -> bool:
        """Does this node seal what it sends?"""
        sealer = self.fx.sealer
        return sealer is not None and sealer.outgoing

    # ------------------------------------------------------------------ asking

    def ask(
        self,
        name: str,
        payload: dict[str, Any],
        now: float,
        on_done: Callable[[QueryResult, float], None],
        timeout: float = QUERY_TIMEOUT,
    ) -> str:
        """Put a question to every live member; ``on_done`` gets the result (at once when this
        node is alone). Returns the query's id. Raises QueryError."""
        if len(self.pending) >= MAX_PENDING_QUERIES:
            raise QueryError(f"too many queries in flight (at most {MAX_PENDING_QUERIES}): try again shortly")
        if not 0 < timeout <= QUERY_TIMEOUT_MAX:
            raise QueryError(f"the timeout must be above 0 and at most {QUERY_TIMEOUT_MAX:g} s")
        spec = self.specs.get(name)
        if spec is not None and spec.sealed_only and not self.seals():
            raise QueryError("this needs encrypted gossip: start the node with --encrypt or --keyring-file")
        if self.local.leaving:
            raise QueryError("the node is leaving")
        me = self.local.name
        qid = uuid.UUID(int=self.rng.getrandbits(128), version=4).hex
        msg = wire.Query(
            id=qid, origin=me, name=name, ts=self.local.wall_ms(now), timeout=int(timeout * 1000), payload=payload
        )
        limit = wire.max_message_size(self.cfg.max_datagram)
        if len(wire.encode_message(msg)) > limit:
            raise QueryError(f"the query is over the {limit}-byte limit")
        self.seen.add(qid, now)
        asked = sorted(m.name for m in self.table.members.values() if m.state in LIVE)
        p = _Pending(QueryResult(qid, name, asked), msg, now + timeout, now + timeout / 4, timeout / 4, on_done)
        self.pending[qid] = p
        self._record(p, me, *self._run(name, payload, now))
        self.gossip.broadcast("q:" + qid, msg, now)
        self._finish_if_complete(p, now)
        return qid

    def on_answer(self, msg: wire.Answer, src: Addr, now: float) -> None:
        if msg.to and msg.to != self.local.name:
            self._pass_on(msg, src)
            return
        p = self.pending.get(msg.id)
        if p is None:
            if self.user is None or not self.user.on_answer(msg, src, now):
                self.fx.drop("unexpected", "answer_dropped")  # late (after the end), or never asked
            return
        m = self.table.get(msg.node)
        if m is None or m.addr != src:
            self.fx.drop("source", "answer_dropped")  # not from the address we know the member at
            return
        if msg.node in p.result.answers:
            self.fx.stats["answer_duplicates"] += 1
            return
        self._record(p, msg.node, msg.payload, msg.error)
        self._finish_if_complete(p, now)

    def _pass_on(self, msg: wire.Answer, src: Addr) -> None:
        """A response relayed through us (core/userquery.py): from a member, to the asker's
        address in our table, never to an address the message gives."""
        dest = self.table.get(msg.to)
        if not self.table.has_addr(src) or dest is None or dest.state not in LIVE or dest.name == msg.node:
            self.fx.drop("relay", "answer_dropped")
            return
        self.fx.stats["answers_passed_on"] += 1
        self.fx.send_msg(msg, dest.addr)

    def _record(self, p: _Pending, node: str, payload: dict[str, Any], error: str) -> None:
        p.result.answers[node] = payload
        if error:
            p.result.errors[node] = error

    def _finish_if_complete(self, p: _Pending, now: float) -> None:
        """End the query if no member it waits on may still answer."""
        answers = p.result.answers
        for name in p.result.missing:
            m = self.table.get(name)
            if m is not None and m.state in LIVE and name not in answers:
                return
        self._finish(p, now)

    def _finish(self, p: _Pending, now: float) -> None:
        del self.pending[p.result.id]
        self.fx.stats["queries_done"] += 1
        p.on_done(p.result, now)

    def tick(self, now: float) -> None:
        for p in list(self.pending.values()):
            if now >= p.deadline:
                self.fx.stats["queries_timed_out"] += 1
                self._finish(p, now)
            elif p.again_at is not None and now >= p.again_at:
                p.again_at = now + p.again_every
                if p.again_at >= p.deadline:
                    p.again_at = None
                self._ask_again(p)
                self._finish_if_complete(p, now)

    def _ask_again(self, p: _Pending) -> None:
        again = msgspec.structs.replace(p.msg, again=True)
        for name in p.result.missing:
            m = self.table.get(name)
            if m is not None and m.state in LIVE:
                self.fx.stats["queries_asked_again"] += 1
                self.fx.send_msg(again, m.addr)

    def deadline(self) -> float | None:
        times = [t for p in self.pending.values() for t in (p.deadline, p.again_at) if t is not None]
        return min(times) if times else None

    # ------------------------------------------------------------------ answering

    def on_query(self, msg: wire.Query, src: Addr, now: float) -> None:
        if msg.origin == self.local.name:
            self.fx.stats["query_duplicates"] += 1  # our own, gossiped back
            return
        if not self.seen.add(msg.id, now):
            answer = self.seen.get(msg.id)
            if msg.again and answer is not None:
                self.send_answer(msg.origin, answer)  # our answer was lost: again
            else:
                self.fx.stats["query_duplicates"] += 1
            return
        if self.local.wall_ms(now) > msg.ts + msg.timeout:
            self.fx.drop("expired", "query_dropped")
            return
        spec = self.specs.get(msg.name)
        if spec is not None and spec.sealed_only and not (self.sealed_input and self.seals()):
            self.fx.drop("plaintext", "query_dropped")  # neither answered nor passed on in the clear
            return
        # Passed on as a plain copy: its receivers have not answered yet.
        self.gossip.broadcast("q:" + msg.id, msgspec.structs.replace(msg, again=False), now)
        origin = self.table.get(msg.origin)
        if origin is None or origin.state not in LIVE:
            self.fx.drop("origin_unknown", "query_dropped")
            return
        if msg.name not in self.specs and self.user is not None:
            got = self.user.on_query(msg, now)
            if got is None:
                return
            data = got
        else:
            data = self._answer_datagram(msg.id, *self._run(msg.name, msg.payload, now))
        self.seen.set(msg.id, data)
        self.fx.stats["queries_answered"] += 1
        self.send_answer(msg.origin, data)

    def send_answer(self, origin: str, data: bytes) -> None:
        m = self.table.get(origin)
        if m is not None and m.state in LIVE:
            self.fx.send(data, m.addr)

    def _run(self, name: str, payload: dict[str, Any], now: float) -> tuple[dict[str, Any], str]:
        spec = self.specs.get(name)
        if spec is None:
            return {}, f"no handler for the query {name[:64]!r} on this node"
        answer, error = spec.handler(payload, now)
        return answer, error[:QUERY_ERROR_MAX]

    def _answer_datagram(self, qid: str, payload: dict[str, Any], error: str) -> bytes:
        me = self.local.name
        answer = wire.Answer(id=qid, node=me, payload=payload, error=error)
        if len(wire.encode_message(answer)) > wire.max_message_size(self.cfg.max_datagram):
            answer = wire.Answer(id=qid, node=me, error="the answer is too big for a datagram")
        return wire.encode([answer], me)
