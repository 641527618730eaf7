"""The shell's side of user queries: ``POST /v1/query`` and ``GET /v1/reachability`` start one
in the core (core/userquery.py) and stream its news as it comes, one JSON object per line
(``application/x-ndjson``), which ``chatterd query`` and ``chatterd reachability`` print:

    {"type": "query", "id": "…", "name": "uptime", "asked": ["n1", "n2"], "timeout_s": 1.0}
    {"type": "ack", "node": "n2", "rtt_ms": 1.2}
    {"type": "response", "node": "n2", "rtt_ms": 9.8, "payload": "up 2 hours\\n"}
    {"type": "summary", "id": "…", "name": "uptime", "asked": 2, "acked": 2, "answered": 1,
     "timed_out": 0, "silent": [], "no_response": ["n1"]}

A response that is an error has ``"error"`` too. ``asked``: the live members the filters pick
in this node's table (plus any other that answered); ``timed_out``/``silent``: those asked
and never heard from; ``no_response`` (not for reachability): those that acknowledged but
did not answer; reachability's has no ``answered`` either.

The requests this node's handlers answer go to chatterd.queryhandlers. Everything is bounded:
a query's rows wait in a buffer of MAX_QUERY_ANSWERS (more are counted and left out; the
summary never is); a client that goes away leaves the query to end in the core.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from chatterd.core.config import MAX_QUERY_ANSWERS, MAX_RELAY_FACTOR
from chatterd.core.events import Event, QueryRequest, QueryUpdate
from chatterd.core.query import QueryError
from chatterd.core.userquery import REACH_QUERY, UserQuery, check_timeout
from chatterd.queryhandlers import QueryRunner

if TYPE_CHECKING:
    from chatterd.runtime import Runtime

QUERY_FIELDS = {"name", "payload", "nodes", "tags", "timeout", "ack", "relay"}  # of a POST /v1/query body
_GRACE = 2.0  # beyond the query's timeout, how long a stream waits for the core's end


@dataclass
class _Open:
    id: str
    name: str
    asked: list[str]
    timeout: float
    send: trio.MemorySendChannel[QueryUpdate]
    receive: trio.MemoryReceiveChannel[QueryUpdate]
    summary: QueryUpdate | None = None
    left_out: int = 0


def parse_body(body: Any) -> UserQuery:
    """A POST /v1/query body as a UserQuery; raises QueryError (the API answers 400)."""
    if not isinstance(body, dict) or set(body) - QUERY_FIELDS or not isinstance(body.get("name"), str):
        others = ", ".join(sorted(QUERY_FIELDS - {"name"}))
        raise QueryError(f'the body must be an object with "name", and any of {others}')
    payload, nodes, tags = body.get("payload", ""), body.get("nodes", []), body.get("tags", {})
    ack, relay, timeout = body.get("ack", True), body.get("relay", 0), body.get("timeout")
    if not isinstance(payload, str):
        raise QueryError('"payload" must be a string')
    if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
        raise QueryError('"nodes" must be a list of member names')
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise QueryError('"tags" must be an object of tag key -> regular expression')
    if not isinstance(ack, bool):
        raise QueryError('"ack" must be true or false')
    if isinstance(relay, bool) or not isinstance(relay, int) or not 0 <= relay <= MAX_RELAY_FACTOR:
        raise QueryError(f'"relay" must be an integer from 0 to {MAX_RELAY_FACTOR}')
    return UserQuery(body["name"], payload, tuple(nodes), tags, ack, relay, check_timeout(timeout))


class QueryOps:
    """User queries in flight through the API, and this node's query handlers."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        opts = rt.opts
        specs = [s for s in opts.handlers if s.query_names]
        self.runner = QueryRunner(specs, name=opts.name, timeout=opts.handler_timeout, respond=self._respond)
        self._open: dict[str, _Open] = {}
        self._stats = {"query_rows_left_out": 0}

    @property
    def stats(self) -> dict[str, int]:
        return self._stats | self.runner.stats

    async def run(self, addr: str) -> None:
        """Tell the core which queries we answer, then run the handlers until cancelled."""
        assert self.rt.node is not None
        self.rt.node.user_queries.set_handled(self.runner.names)
        await self.runner.run(addr)

    def record(self, ev: Event) -> bool:
        """An event of the core: True if it was about a query (then it is handled here)."""
        if isinstance(ev, QueryUpdate):
            op = self._open.get(ev.id)
            if op is not None:
                self._deliver(op, ev)
            return True
        if isinstance(ev, QueryRequest):
            self.runner.submit(ev)
            return True
        return False

    def _deliver(self, op: _Open, ev: QueryUpdate) -> None:
        if ev.kind == "done":
            op.summary = ev
            op.send.close()
            return
        try:
            op.send.send_nowait(ev)
        except (trio.WouldBlock, trio.ClosedResourceError):
            op.left_out += 1
            self._stats["query_rows_left_out"] += 1

    def _respond(self, qid: str, data: str, error: str) -> None:
        node = self.rt.node
        if node is not None:
            node.user_queries.respond(qid, data, error, trio.current_time())
            self.rt.kick()  # the loop sends it now

    def start(self, q: UserQuery | None, timeout: float | None = None) -> _Open:
        """Ask ``q`` (None: reachability). Raises QueryError: nothing was asked."""
        node = self.rt.node
        assert node is not None
        uq = node.user_queries
        now = trio.current_time()
        qid = uq.reachability(timeout, now) if q is None else uq.ask(q, now)
        send, receive = trio.open_memory_channel[QueryUpdate](MAX_QUERY_ANSWERS)
        asked = uq.asked.get(qid)
        expected, until = (asked.expected, asked.deadline) if asked is not None else ([], now)
        name = REACH_QUERY if q is None else q.name
        op = self._open[qid] = _Open(qid, name, list(expected), until - now, send, receive)
        self.rt.kick()  # the loop sends the query, and hands over the events the core has
        return op

    async def lines(self, op: _Open) -> AsyncIterator[bytes]:
        """The stream's lines: the query, each ack and response as it comes, the summary."""
        try:
            yield _line({"type": "query", "id": op.id, "name": op.name, "asked": op.asked, "timeout_s": op.timeout})
            deadline = trio.current_time() + op.timeout + _GRACE
            while True:
                ev: QueryUpdate | None = None
                with trio.move_on_at(deadline):  # never yield inside it: this is a generator
                    try:
                        ev = await op.receive.receive()
                    except trio.EndOfChannel:
                        pass
                if ev is None:
                    break
                yield _line(_row(ev))
            yield _line(summary_row(op))
        finally:
            self._open.pop(op.id, None)
            op.send.close()


def _row(ev: QueryUpdate) -> dict[str, Any]:
    row: dict[str, Any] = {"type": ev.kind, "node": ev.node, "rtt_ms": round(ev.rtt * 1000, 1)}
    if ev.kind == "response":
        row["payload"] = ev.data
        if ev.error:
            row["error"] = ev.error
    return row


def summary_row(op: _Open) -> dict[str, Any]:
    s = op.summary
    if s is None:  # the core did not end it in time: cannot happen but for a stalled loop
        return {"type": "summary", "id": op.id, "name": op.name, "error": "the query did not end in time"}
    row: dict[str, Any] = {
        "type": "summary",
        "id": op.id,
        "name": op.name,
        "asked": len(s.asked),
        "acked": len(s.acked),
        "answered": len(s.answered),
        "timed_out": len(s.silent),
        "silent": list(s.silent),
    }
    if op.name == REACH_QUERY:  # acknowledgements are all reachability asks for
        del row["answered"]
    else:
        row["no_response"] = [n for n in s.acked if n not in s.answered]
    if op.left_out:
        row["left_out"] = op.left_out
    return row


def _line(row: dict[str, Any]) -> bytes:
    return (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
