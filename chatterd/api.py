"""Read-only HTTP JSON API of a node (Starlette app served by Hypercorn on trio).

GET /v1/members   one object per known member
GET /v1/devices   the cluster's device table
GET /v1/events    recent deliveries and membership changes (?since=SEQ for newer ones)
GET /v1/health    whether this node is healthy (503 when not, with the reasons), and its counters
GET /metrics      Prometheus text format (chatterd.metrics)
GET /             the dashboard: chatterd/static/index.html, which polls the JSON above
GET /static/...   its script and style sheet (files in the package: no CDN, works offline)
"""

from __future__ import annotations

import logging
from collections.abc import Reversible
from importlib import resources
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from chatterd.core import wire
from chatterd.metrics import Metrics

if TYPE_CHECKING:
    from chatterd.runtime import Runtime

STATIC_PACKAGE = ("chatterd", "static")


def events_since(events: Reversible[dict[str, Any]], since: int) -> list[dict[str, Any]]:
    """The rows of ``events`` (ordered by increasing ``seq``) with ``seq > since``, oldest first.

    Walks back from the newest row, so a poller that is up to date costs one comparison
    instead of a scan of the whole buffer.
    """
    newer: list[dict[str, Any]] = []
    for e in reversed(events):
        if e["seq"] <= since:
            break
        newer.append(e)
    newer.reverse()
    return newer


def _dashboard_html() -> bytes:
    return resources.files(STATIC_PACKAGE[0]).joinpath(STATIC_PACKAGE[1], "index.html").read_bytes()


def build_app(rt: Runtime) -> Starlette:
    if rt.metrics is None:
        rt.metrics = Metrics(rt)  # this runtime's own registry, never prometheus_client's global one
    metrics = rt.metrics

    async def members(request: Request) -> JSONResponse:
        assert rt.node is not None
        return JSONResponse(rt.node.member_rows(trio.current_time()))

    async def devices(request: Request) -> JSONResponse:
        assert rt.node is not None
        return JSONResponse(rt.node.device_rows())

    async def events(request: Request) -> JSONResponse:
        try:
            since = int(request.query_params.get("since", "0"))
        except ValueError:
            return JSONResponse({"error": "since must be an integer"}, status_code=400)
        return JSONResponse(events_since(rt.events, since))

    async def health(request: Request) -> JSONResponse:
        h = rt.health()
        return JSONResponse(h, status_code=200 if h["status"] == "ok" else 503)

    async def prometheus(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    dashboard_html = _dashboard_html()

    async def dashboard(request: Request) -> HTMLResponse:
        return HTMLResponse(dashboard_html)

    return Starlette(
        routes=[
            Route("/v1/members", members),
            Route("/v1/devices", devices),
            Route("/v1/events", events),
            Route("/v1/health", health),
            Route("/metrics", prometheus),
            Route("/", dashboard),
            Mount("/static", StaticFiles(packages=[STATIC_PACKAGE]), name="static"),
        ]
    )


async def serve_api(
    rt: Runtime, addr: tuple[str, int], *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    cfg = HyperConfig()
    cfg.bind = [wire.format_addr(addr)]
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("hypercorn.error")  # through our structlog handler
    cfg.graceful_timeout = 0.2
    try:
        await serve(build_app(rt), cfg, task_status=task_status)  # type: ignore[arg-type]
    except (OSError, BaseExceptionGroup) as e:
        from chatterd.runtime import os_error_of

        err = os_error_of(e)
        if err is None:
            raise
        raise OSError(err.errno, f"cannot serve HTTP on {cfg.bind[0]}: {err.strerror}") from None
