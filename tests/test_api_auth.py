"""The API's gate, in-process (httpx.ASGITransport around a Runtime of a simulated node): the
token for mutations (and for reads beyond loopback), bounded bodies read in chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from starlette.routing import Route

from chatterd.api import build_app, check_marked
from chatterd.apiguard import Guard, Message, mutating
from chatterd.core.config import HTTP_MAX_BODY, LAN
from chatterd.httpauth import HttpToken
from chatterd.runtime import Options, Runtime
from chatterd.sim import Simulation

TOKEN = "s3cret-token"


def runtime(loopback: bool = True) -> Runtime:
    sim = Simulation(seed=5)
    sim.start_cluster(2)
    sim.run_for(2)
    node = sim.nodes["n0"]
    rt = Runtime(Options(listen=("127.0.0.1", 0), name=node.name, config=LAN))
    rt.node = node
    rt.http_token = HttpToken(TOKEN, loopback=loopback)
    return rt


def client(rt: Runtime) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(rt)), base_url="http://127.0.0.1:2428")


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_mutations_need_the_token_whatever_the_content_type() -> None:
    rt = runtime()
    assert rt.node is not None
    before = dict(rt.node.tags), rt.node.inc
    body = '{"set": {"pwned": "1"}}'
    async with client(rt) as c:
        attempts = [
            c.put("/v1/tags", content=body, headers={"Content-Type": "application/json"}),
            c.post("/v1/tags", content=body, headers={"Content-Type": "text/plain"}),  # a cross-site form
            c.post("/v1/tags", data={"set": "x"}),  # application/x-www-form-urlencoded
            c.put("/v1/tags", content=body, headers=bearer("wrong")),
            c.put("/v1/tags", content=body, headers={"Authorization": TOKEN}),  # no scheme
            c.put("/v1/tags", content=body, headers={"Authorization": f"Basic {TOKEN}"}),
            c.put(f"/v1/tags?access_token={TOKEN}", content=body),  # the query form is for reads only
            c.post("/v1/leave"),
            c.post("/v1/leave", headers=bearer(TOKEN + "x")),
            c.delete("/v1/members"),  # any method that is not a read, on any path
        ]
        for attempt in attempts:
            r = await attempt
            assert r.status_code == 401, r.text
            assert set(r.json()) == {"error"} and "token" in r.json()["error"]
            assert r.headers["www-authenticate"] == "Bearer"
        assert (dict(rt.node.tags), rt.node.inc) == before
        assert not rt.node.leaving
        assert rt.stats["http_unauthorized"] == len(attempts)

        r = await c.put("/v1/tags", content=body, headers=bearer() | {"Content-Type": "text/plain"})
        assert r.status_code == 200 and r.json()["tags"]["pwned"] == "1", r.text
        # Reads on a loopback API stay open.
        assert (await c.get("/v1/members")).status_code == 200


async def test_a_rebound_name_needs_the_token_on_loopback_too() -> None:
    rt = runtime()
    async with client(rt) as c:
        for host in ("localhost:2428", "127.0.0.1", "[::1]:2428", "app.localhost"):
            assert (await c.get("/v1/members", headers={"Host": host})).status_code == 200, host
        for host in ("evil.example", "evil.example:2428", "127.0.0.1.nip.io"):  # DNS rebinding
            assert (await c.get("/v1/members", headers={"Host": host})).status_code == 401, host
            assert (await c.get("/v1/members", headers={"Host": host} | bearer())).status_code == 200, host
            assert (await c.get("/v1/health", headers={"Host": host})).status_code in (200, 503), host


async def test_a_runtime_without_token_refuses_every_mutation() -> None:
    rt = runtime()
    rt.http_token = None
    async with client(rt) as c:
        assert (await c.put("/v1/tags", json={"set": {"a": "b"}}, headers=bearer())).status_code == 401


async def test_beyond_loopback_reads_need_the_token_but_health_and_metrics() -> None:
    rt = runtime(loopback=False)
    async with client(rt) as c:
        for path in (
            "/v1/members",
            "/v1/roles",
            "/v1/devices",
            "/v1/events",
            "/v1/events/stream",
            "/v1/coordinates",
            "/nowhere",
        ):
            r = await c.get(path)
            assert r.status_code == 401 and "error" in r.json(), path
            assert (await c.get(path, headers=bearer("nope"))).status_code == 401, path
        for path in ("/v1/health", "/metrics", "/", "/static/app.js"):  # the dashboard shell holds no data
            assert (await c.get(path)).status_code in (200, 503), path
        r = await c.get("/v1/members", headers=bearer())
        assert r.status_code == 200 and {m["name"] for m in r.json()} == {"n0", "n1"}
        assert (await c.get(f"/v1/events?access_token={TOKEN}")).status_code == 200  # for EventSource


async def test_a_body_over_the_bound_is_413_before_it_is_read() -> None:
    rt = runtime()
    async with client(rt) as c:
        r = await c.put("/v1/tags", content=b"x" * (HTTP_MAX_BODY + 1), headers=bearer())
        assert r.status_code == 413 and "error" in r.json()
        assert r.headers["connection"] == "close"

        sent = 0

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
            nonlocal sent
            for _ in range(100 * 1024):  # 100 MB if it were all read
                sent += 1024
                yield b" " * 1024

        r = await c.put("/v1/tags", content=chunks(), headers=bearer())
        assert r.status_code == 413
        assert sent <= HTTP_MAX_BODY + 2 * 1024  # it stopped reading at the bound
        assert rt.stats["http_body_too_large"] == 2

        r = await c.put("/v1/tags", content=b" " * 1000 + b'{"set": {"a": "b"}}', headers=bearer())
        assert r.status_code == 200  # under the bound: read, then parsed as before


async def test_a_trickling_body_gets_408(autojump_clock: trio.testing.MockClock) -> None:
    token = HttpToken(TOKEN)
    reached: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append((await receive())["body"])

    guard = Guard(app, token, max_body=100, timeout=5.0)
    sent: list[Message] = []

    async def receive() -> Message:
        await trio.sleep(1.0)  # a byte a second: the body would take 100 s
        return {"type": "http.request", "body": b"x", "more_body": True}

    async def send(msg: Message) -> None:
        sent.append(msg)

    auth = [(b"authorization", b"Bearer " + TOKEN.encode())]
    scope = {"type": "http", "method": "POST", "path": "/v1/tags", "headers": auth}
    start = trio.current_time()
    await guard(scope, receive, send)
    assert sent[0]["status"] == 408 and trio.current_time() - start == pytest.approx(5.0)
    assert reached == [] and guard.stats["http_body_timeout"] == 1


def test_a_mutating_route_must_be_marked() -> None:
    async def endpoint(request: Any) -> None: ...

    check_marked([Route("/v1/things", endpoint)])  # GET only: fine
    with pytest.raises(TypeError, match="mark its endpoint @mutating"):
        check_marked([Route("/v1/things", endpoint, methods=["GET", "DELETE"])])
    check_marked([Route("/v1/things", mutating(endpoint), methods=["DELETE"])])
