"""The API's operator routes, beside chatterd.api's (which mounts them):

GET  /v1/info          this node, its protocol, counters and the config in effect (chatterd info)
POST /v1/force-leave   {"node": NAME, "prune": false}: move the failed member NAME to left
                       cluster-wide (chatterd force-leave); 404 for an unknown member, 409 for a
                       live one (it would refute)
POST /v1/join         {"addrs": ["HOST:PORT", ...], "timeout": S}: knock on other nodes (chatterd join,
                       chatterd.joinops)
GET  /v1/monitor       the node's log lines as they happen, as server-sent events, one JSON
                       object each (?level=trace|debug|info|warn|error, default info; the
                       node's own log level does not limit it); chatterd monitor

The guard of the API (chatterd.apiguard) applies as to every route: POST needs the token, and
beyond loopback every read too (log lines may be sensitive). A monitor holds a bounded buffer
(chatterd.logtap): a slow reader loses lines (a ``monitor_dropped`` line says how many), it
never holds up the node.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from chatterd import joinops, logtap
from chatterd.apiguard import mutating
from chatterd.cliargs import version
from chatterd.core import wire
from chatterd.core.forceleave import ForceLeaveError
from chatterd.core.membership import LIVE

if TYPE_CHECKING:
    from chatterd.runtime import Runtime

FORCE_LEAVE_FIELDS = {"node", "prune"}
MAX_NAME = 256  # a member name in a request: longer is no member's
MONITOR_KEEPALIVE_S = 15.0  # as the event stream's (chatterd.api.KEEPALIVE_S)


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def info(rt: Runtime) -> dict[str, Any]:
    """GET /v1/info's body: like ``serf info``, what this node is and runs with."""
    node = rt.node
    assert node is not None
    health = rt.health()
    opts = rt.opts
    return {
        "node": {
            "name": node.name,
            "id": node.id,
            "addr": wire.format_addr(node.addr),
            "incarnation": node.inc,
            "tags": node.tags,
            "version": version(),
            "uptime_s": health["uptime_s"],
            "status": health["status"],
            "reasons": health["reasons"],
        },
        "protocol": {
            "version": wire.VERSION,
            "profile": opts.profile,
            "encryption": health.get("encryption_mode", health.get("encryption")),
            "label": opts.label,
        },
        "members": health["members"],
        "roles_held": health["roles_held"],
        # /v1/health's counters, with the gauges of /metrics that are not among them.
        "counters": health["counters"]
        | {"broadcast_queue_depth": len(node.queue), "event_buffer_size": len(rt.events)},
        "config": dataclasses.asdict(opts.config),
        "agent": {
            "listen": wire.format_addr(opts.listen),
            "http": rt.http_bound,
            "data_dir": None if opts.data_dir is None else str(opts.data_dir),
            "rejoin": opts.rejoin,
            "config_file": None if opts.config_file is None else str(opts.config_file),
            "event_handlers": [f"{s.filter_text}={s.command}" for s in rt.handlers.specs],
            "seeds": [wire.format_addr(s) for s in node.seeds],
        },
    }


class OpsEndpoints:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def info(self, request: Request) -> JSONResponse:
        return JSONResponse(info(self.rt))

    @mutating
    async def force_leave(self, request: Request) -> JSONResponse:
        node = self.rt.node
        assert node is not None
        try:
            body = await request.json()
        except ValueError:
            return _error('the body must be JSON: {"node": "NAME", "prune": false}')
        if not isinstance(body, dict) or set(body) - FORCE_LEAVE_FIELDS:
            return _error('the body must be an object with "node", and "prune" if wanted')
        name, prune = body.get("node"), body.get("prune", False)
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or not isinstance(prune, bool):
            return _error(f'"node" must be a member name (1 to {MAX_NAME} characters) and "prune" true or false')
        if node.leaving:
            return _error("the node is leaving", 409)
        try:
            result = node.force.request(name, prune, trio.current_time())
        except ForceLeaveError as e:
            return _error(str(e), 404 if e.reason == "unknown" else 409)
        self.rt.kick()  # the news goes out now
        live = sum(1 for m in node.table.members.values() if m.state in LIVE)
        return JSONResponse(dataclasses.asdict(result) | {"members_told": max(live - 1, 0)})

    @mutating
    async def join(self, request: Request) -> JSONResponse:
        return await joinops.endpoint(self.rt, request)

    async def monitor(self, request: Request) -> Response:
        text = request.query_params.get("level", "info").strip().lower()
        level = logtap.LEVELS.get(text)
        if level is None:
            return _error(f"unknown level {text!r}: expected one of {', '.join(logtap.LEVEL_NAMES)}")
        tap = logtap.TAP
        if tap.full():
            return _error(f"too many monitors (at most {logtap.MAX_MONITORS})", 503)
        return StreamingResponse(
            _monitor_stream(tap, level),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


async def _monitor_stream(tap: logtap.LogTap, level: int) -> AsyncIterator[bytes]:
    """The bytes of a monitor: each log line at ``level`` or above as an event, a keep-alive
    comment when idle, a ``monitor_dropped`` line after lines lost to a slow reader."""
    with tap.subscribe(level, trio.lowlevel.current_trio_token()) as sub:
        yield b"retry: 1000\n\n"
        while True:
            with trio.move_on_after(MONITOR_KEEPALIVE_S):  # never yield inside it: this is a generator
                await sub.wait()
            lines = sub.take()
            if not lines:
                yield b": keep-alive\n\n"
                continue
            yield b"".join(b"data: " + line + b"\n\n" for line in lines)


def routes(rt: Runtime) -> list[Route]:
    e = OpsEndpoints(rt)
    return [
        Route("/v1/info", e.info),
        Route("/v1/force-leave", e.force_leave, methods=["POST"]),
        Route("/v1/monitor", e.monitor),
        Route("/v1/join", e.join, methods=["POST"]),
    ]
