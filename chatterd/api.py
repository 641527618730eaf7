"""HTTP JSON API of a node (Starlette app served by Hypercorn on trio).

GET  /v1/members   one object per known member (?status=S and ?tag=KEY=VALUE filter, repeatable)
GET  /v1/devices   the cluster's device table
GET  /v1/roles     each role: holder, epoch (fencing token), since, candidates, and this node's part
GET  /v1/events    recent deliveries and membership changes (?since=SEQ for newer ones)
GET  /v1/events/stream  the same rows as server-sent events, live (Last-Event-ID or ?since=SEQ
                   replays the buffered rows after SEQ first); a comment every KEEPALIVE_S
GET  /v1/health    whether this node is healthy (503 when not, with the reasons), and its counters
POST /v1/roles/NAME/lease  the application renews its lease on role NAME (--lease-ttl);
                   POST /v1/roles/lease renews every role of this node
PUT  /v1/tags      change this node's tags: {"set": {"k": "v"}, "delete": ["k"]} (POST too)
POST /v1/leave     leave the cluster gracefully, then the daemon exits
GET  /v1/keys      the keys every member holds, with counts (?timeout=S: how long to wait)
POST /v1/keys/install, /v1/keys/use, /v1/keys/remove   {"key": "<base64>", "force": false,
                   "timeout": S}: the keyring operation on every member (409 when refused)
POST /v1/query     a user query (chatterd.queryops): {"name": N, "payload": S, "nodes": [...],
                   "tags": {"k": "regex"}, "timeout": S, "ack": true, "relay": K}; the answer
                   streams one JSON object per line: the query, each ack and response, a summary
GET  /v1/reachability  every live member asked to acknowledge (?timeout=S), streamed the same way
GET  /v1/coordinates  this node's network coordinate and every one it knows (chatterd.coords)
GET  /v1/info, POST /v1/force-leave, GET /v1/monitor   chatterd.opsapi (chatterd info, force-leave, monitor)
GET  /metrics      Prometheus text format (chatterd.metrics)
GET  /             the dashboard: chatterd/static/index.html, fed by the stream and the JSON above
GET  /static/...   its script and style sheet (files in the package: no CDN, works offline)

Errors are answered with a 4xx status (503 for a stream over MAX_STREAMS) and
{"error": "<one line>"}.

Who may ask (chatterd.apiguard, chatterd.httpauth): PUT/POST need Authorization: Bearer TOKEN
(401 otherwise, whatever the Content-Type); beyond loopback every read too, except /v1/health,
/metrics and the dashboard's files. Bodies: at most HTTP_MAX_BODY bytes (413), read in chunks.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from chatterd import coords, httplisten, opsapi, views
from chatterd.apiguard import Guard, is_mutating, mutating
from chatterd.core import tags, wire
from chatterd.core.config import HTTP_MAX_HEADERS, QUERY_TIMEOUT
from chatterd.core.keyring import KeyringError
from chatterd.core.membership import MemberState
from chatterd.core.query import QueryError
from chatterd.core.userquery import UserQuery, check_timeout
from chatterd.eventlog import EventLog, Row
from chatterd.httpauth import HttpToken
from chatterd.keyops import result_json
from chatterd.leases import UnknownRole, lease_answer
from chatterd.metrics import Metrics
from chatterd.queryops import parse_body as parse_query_body

if TYPE_CHECKING:
    from chatterd.runtime import Runtime

STATIC_PACKAGE = ("chatterd", "static")
KEYS_FIELDS = {"key", "force", "timeout"}  # of a POST /v1/keys/OP body


# GET /v1/events/stream: a comment line this often keeps proxies and clients from timing out an
# idle stream (and lets the server notice a client that went away); a client told to
# reconnect waits RETRY_MS; at most MAX_STREAMS streams at a time (each holds a bounded queue,
# chatterd.eventlog.SUBSCRIBER_BUFFER rows).
KEEPALIVE_S = 15.0
RETRY_MS = 1000
MAX_STREAMS = 64


def _json(row: Row) -> str:
    return json.dumps(row, ensure_ascii=False, allow_nan=False, separators=(",", ":"))  # as JSONResponse


def sse_event(row: Row) -> bytes:
    """One server-sent event: the row's seq as its id, the row as one line of JSON."""
    return f"id: {row['seq']}\ndata: {_json(row)}\n\n".encode()


async def sse_stream(log: EventLog, since: int | None, keepalive: float) -> AsyncIterator[bytes]:
    """The bytes of an event stream: the rows after ``since`` (none when None), then each new
    row, with keep-alive comments; ends (after a comment saying so) when the event log dropped
    this reader for being slow. Subscribes when first iterated, unsubscribes when closed."""
    with log.subscribe(since) as sub:
        yield f"retry: {RETRY_MS}\n\n".encode() + b"".join(sse_event(row) for row in sub.backlog)
        while True:
            row: Row | None = None
            ended = False
            with trio.move_on_after(keepalive):  # never yield inside it: this is a generator
                try:
                    row = await sub.receive.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    ended = True
            if ended:
                yield b": too slow: reconnect with Last-Event-ID\n\n"
                return
            yield b": keep-alive\n\n" if row is None else sse_event(row)


def _dashboard_html() -> bytes:
    return resources.files(STATIC_PACKAGE[0]).joinpath(STATIC_PACKAGE[1], "index.html").read_bytes()


class _Endpoints:
    """The API's request handlers, around one runtime."""

    def __init__(self, rt: Runtime, metrics: Metrics) -> None:
        self.rt = rt
        self.metrics = metrics
        self.dashboard_html = _dashboard_html()

    async def members(self, request: Request) -> JSONResponse:
        assert self.rt.node is not None
        try:
            keep = member_filter(request.query_params.getlist("status"), request.query_params.getlist("tag"))
        except ValueError as e:
            return error(str(e))
        return JSONResponse([row for row in views.member_rows(self.rt.node, trio.current_time()) if keep(row)])

    async def roles(self, request: Request) -> JSONResponse:
        assert self.rt.node is not None
        return JSONResponse(views.role_rows(self.rt.node, trio.current_time()))

    async def devices(self, request: Request) -> JSONResponse:
        assert self.rt.node is not None
        return JSONResponse(views.device_rows(self.rt.node))

    async def events(self, request: Request) -> JSONResponse:
        try:
            since = int(request.query_params.get("since", "0"))
        except ValueError:
            return JSONResponse({"error": "since must be an integer"}, status_code=400)
        return JSONResponse(self.rt.eventlog.rows(since))

    async def events_stream(self, request: Request) -> Response:
        log = self.rt.eventlog
        # A reconnecting EventSource sends Last-Event-ID; it wins over the ?since= of its URL.
        last_id = request.headers.get("last-event-id")
        text, what = (last_id, "Last-Event-ID") if last_id is not None else (request.query_params.get("since"), "since")
        since: int | None = None
        if text is not None and text.strip() != "":
            try:
                since = int(text)
            except ValueError:
                return error(f"{what} must be an integer")
            if since > log.last_seq:
                since = 0  # numbered by an earlier life of this node: everything here is new to it
        if log.subscribers >= MAX_STREAMS:
            return error(f"too many event streams (at most {MAX_STREAMS})", 503)
        return StreamingResponse(
            sse_stream(log, since, KEEPALIVE_S),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @mutating
    async def set_tags(self, request: Request) -> JSONResponse:
        node = self.rt.node
        assert node is not None
        try:
            body = await request.json()
        except ValueError:
            return error('the body must be JSON: {"set": {"KEY": "VALUE"}, "delete": ["KEY"]}')
        if not isinstance(body, dict) or set(body) - {"set", "delete"}:
            return error('the body must be an object with "set" and/or "delete"')
        set_, delete = body.get("set", {}), body.get("delete", [])
        if not isinstance(set_, dict) or not all(isinstance(v, str) for v in set_.values()):
            return error('"set" must be an object of strings')
        if not isinstance(delete, list) or not all(isinstance(k, str) for k in delete):
            return error('"delete" must be a list of strings')
        if node.leaving:
            return error("the node is leaving", 409)
        try:
            changed = self.rt.update_tags(set_, delete)
        except tags.TagsError as e:
            return error(str(e))
        return JSONResponse({"name": node.name, "tags": node.tags, "incarnation": node.inc, "changed": changed})

    @mutating
    async def leave(self, request: Request) -> JSONResponse:
        node = self.rt.node
        assert node is not None
        if node.leaving:
            return error("the node is already leaving", 409)
        # After the answer is sent: the leave stops the daemon, this server included.
        return JSONResponse({"name": node.name, "leaving": True}, background=BackgroundTask(self.rt.leave))

    @mutating
    async def lease(self, request: Request) -> JSONResponse:
        """Renew the application's lease on one role of this node (its path names it) or on
        all of them (chatterd.leases): the role stays on offer for --lease-ttl seconds more."""
        node, leases = self.rt.node, self.rt.leases
        assert node is not None
        if leases is None:
            return error("this node takes no leases: start it with --lease-ttl SECONDS", 409)
        if node.leaving:
            return error("the node is leaving", 409)
        now = trio.current_time()
        role = request.path_params.get("role")
        try:
            renewed = leases.renew_all(now) if role is None else leases.renew(role, now)
        except UnknownRole:
            return error(f"this node is not a candidate for role {role!r} (its roles: {sorted(leases.expires)})", 404)
        held = {r: c.epoch for r, c in node.roles.held.items()}
        answers = [lease_answer(leases, r, held, now) for r in renewed]
        return JSONResponse(answers[0] if role is not None else {"roles": answers})

    async def keys_list(self, request: Request) -> JSONResponse:
        try:
            timeout = float(request.query_params.get("timeout", QUERY_TIMEOUT))
        except ValueError:
            return error("timeout must be a number of seconds")
        return await self._keys("list", None, False, timeout)

    @mutating
    async def keys_change(self, request: Request) -> JSONResponse:
        op = request.path_params["op"]
        try:
            body = await request.json()
        except ValueError:
            return error('the body must be JSON: {"key": "<base64>"}')
        if not isinstance(body, dict) or set(body) - KEYS_FIELDS or not isinstance(body.get("key"), str):
            return error('the body must be an object with "key" (base64), and "force" or "timeout" if wanted')
        force, timeout = body.get("force", False), body.get("timeout", QUERY_TIMEOUT)
        if not isinstance(force, bool) or isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            return error('"force" must be true or false and "timeout" a number of seconds')
        return await self._keys(op, body["key"], force, float(timeout))

    async def _keys(self, op: str, key: str | None, force: bool, timeout: float) -> JSONResponse:
        try:
            result = await self.rt.keyops.run(self.rt, op, key, force=force, timeout=timeout)
        except (KeyringError, QueryError) as e:
            return error(str(e), 409 if str(e).startswith("refused") else 400)
        body = result_json(result)
        if result.refused:
            return JSONResponse(body | {"error": result.refused}, status_code=409)
        return JSONResponse(body)

    @mutating
    async def query(self, request: Request) -> Response:
        try:
            q = parse_query_body(await request.json())
        except ValueError as e:  # QueryError too
            return error(str(e) if isinstance(e, QueryError) else "the body must be JSON")
        return self._query_stream(q, None)

    async def reachability(self, request: Request) -> Response:
        try:
            timeout = check_timeout(request.query_params.get("timeout"))
        except QueryError as e:
            return error(str(e))
        return self._query_stream(None, timeout)

    def _query_stream(self, q: UserQuery | None, timeout: float | None) -> Response:
        try:
            op = self.rt.queryops.start(q, timeout)
        except QueryError as e:
            return error(str(e))
        return StreamingResponse(self.rt.queryops.lines(op), media_type="application/x-ndjson")

    async def coordinates(self, request: Request) -> JSONResponse:
        assert self.rt.node is not None
        return JSONResponse(coords.coordinates_view(self.rt.node))

    async def health(self, request: Request) -> JSONResponse:
        h = self.rt.health()
        return JSONResponse(h, status_code=200 if h["status"] == "ok" else 503)

    async def prometheus(self, request: Request) -> Response:
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def dashboard(self, request: Request) -> HTMLResponse:
        return HTMLResponse(self.dashboard_html)


def build_app(rt: Runtime) -> Guard:
    if rt.metrics is None:
        rt.metrics = Metrics(rt)  # this runtime's own registry, never prometheus_client's global one
    e = _Endpoints(rt, rt.metrics)
    routes = [
        Route("/v1/members", e.members),
        Route("/v1/devices", e.devices),
        Route("/v1/roles", e.roles),
        Route("/v1/roles/lease", e.lease, methods=["POST"]),
        Route("/v1/roles/{role:str}/lease", e.lease, methods=["POST"]),
        Route("/v1/events", e.events),
        Route("/v1/events/stream", e.events_stream),
        Route("/v1/health", e.health),
        Route("/v1/tags", e.set_tags, methods=["PUT", "POST"]),
        Route("/v1/leave", e.leave, methods=["POST"]),
        Route("/v1/keys", e.keys_list),
        Route("/v1/keys/{op:str}", e.keys_change, methods=["POST"]),
        Route("/v1/query", e.query, methods=["POST"]),
        Route("/v1/reachability", e.reachability),
        Route("/v1/coordinates", e.coordinates),
        *opsapi.routes(rt),  # /v1/info, /v1/force-leave, /v1/monitor
        Route("/metrics", e.prometheus),
        Route("/", e.dashboard),
        Mount("/static", StaticFiles(packages=[STATIC_PACKAGE]), name="static"),
    ]
    check_marked(routes)
    if rt.http_token is None:  # never run (tests): a token nobody knows, so nothing mutates
        rt.http_token = HttpToken.unknown()
    return Guard(Starlette(routes=routes), rt.http_token, stats=rt.stats)  # counts in /v1/health


STATES = tuple(s.value for s in MemberState)


def check_marked(routes: Sequence[BaseRoute]) -> None:
    """A route that accepts more than GET/HEAD changes something: it must say so (@mutating)."""
    for route in routes:
        if isinstance(route, Route) and (route.methods or set()) - {"GET", "HEAD"}:
            if not is_mutating(route.endpoint):
                raise TypeError(f"{route.path} accepts {sorted(route.methods or ())}: mark its endpoint @mutating")


def error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def member_filter(statuses: list[str], tag_pairs: list[str]) -> Callable[[dict[str, Any]], bool]:
    """A predicate on member rows: state among ``statuses`` (comma lists allowed; none = any)
    and every KEY=VALUE of ``tag_pairs`` among the member's tags. Raises ValueError."""
    wanted = {s for item in statuses for s in item.split(",") if s}
    unknown = wanted - set(STATES)
    if unknown:
        raise ValueError(f"unknown status {sorted(unknown)[0]!r}: expected one of {', '.join(STATES)}")
    pairs = [tags.parse_pair(p) for p in tag_pairs]  # TagsError is a ValueError

    def keep(row: dict[str, Any]) -> bool:
        return (not wanted or row["state"] in wanted) and all(row["tags"].get(k) == v for k, v in pairs)

    return keep


async def serve_api(
    rt: Runtime,
    addr: tuple[str, int],
    *,
    sock: socket.socket | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API on ``addr``; on ``sock`` if given, the socket chatterd.httplisten bound
    for it at start (the server takes it over)."""
    cfg = HyperConfig()
    cfg.bind = [wire.format_addr(addr) if sock is None else httplisten.hand_over(sock)]
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("hypercorn.error")  # through our structlog handler
    cfg.graceful_timeout = 0.2
    cfg.h11_max_incomplete_size = HTTP_MAX_HEADERS
    try:
        await serve(build_app(rt), cfg, task_status=task_status)  # type: ignore[arg-type]
    except (OSError, BaseExceptionGroup) as e:
        from chatterd.runtime import os_error_of

        err = os_error_of(e)
        if err is None:
            raise
        raise OSError(err.errno, f"cannot serve HTTP on {wire.format_addr(addr)}: {err.strerror}") from None
