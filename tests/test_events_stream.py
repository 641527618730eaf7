"""GET /v1/events/stream in-process: a real Hypercorn server (the API as the daemon serves it)
around a Runtime that was never run, its events recorded by hand."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from chatterd import api
from chatterd.api import serve_api, sse_stream
from chatterd.core.config import LAN
from chatterd.core.events import MemberEvent
from chatterd.eventlog import EventLog
from chatterd.runtime import Options, Runtime
from chatterd.testing import HOST, free_port

TIMEOUT = 10.0


def joined(name: str) -> MemberEvent:
    return MemberEvent(kind="member-join", node=name, id=f"id-{name}", addr="127.0.0.1:1", inc=1, state="alive")


@asynccontextmanager
async def server(event_buffer: int = 100) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    rt = Runtime(Options(listen=(HOST, 0), name="n0", config=LAN, event_buffer=event_buffer))
    port = free_port()
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_api, rt, (HOST, port))
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=TIMEOUT) as client:
            yield rt, client
        nursery.cancel_scope.cancel()


class Reader:
    """The events and comments of one open stream, parsed line by line."""

    def __init__(self, resp: httpx.Response) -> None:
        self.lines = resp.aiter_lines()

    async def next(self) -> tuple[str, Any]:
        """("event", (id, row)), ("comment", text) or ("retry", ms): the next block."""
        fields: dict[str, str] = {}
        with trio.fail_after(TIMEOUT):
            async for line in self.lines:
                if line == "":
                    if "data" in fields:
                        row = json.loads(fields["data"])
                        assert fields["id"] == str(row["seq"])
                        return "event", row
                    if "retry" in fields:
                        return "retry", int(fields["retry"])
                    continue
                if line.startswith(":"):
                    return "comment", line[1:].strip()
                name, _, value = line.partition(": ")
                fields[name] = value
        raise AssertionError("the stream ended")

    async def rows(self, n: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while len(out) < n:
            kind, value = await self.next()
            if kind == "event":
                out.append(value)
        return out


async def test_replay_since_then_live_in_order() -> None:
    async with server() as (rt, client):
        for name in ("a", "b", "c"):
            rt._record(joined(name))
        async with client.stream("GET", "/v1/events/stream?since=1") as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            assert resp.headers["cache-control"] == "no-cache"
            reader = Reader(resp)
            assert await reader.next() == ("retry", api.RETRY_MS)
            assert [r["origin"] for r in await reader.rows(2)] == ["b", "c"]  # the replay
            rt._record(joined("d"))
            [live] = await reader.rows(1)
            assert live == rt.eventlog.rows(3)[0] and live["seq"] == 4
        with trio.fail_after(TIMEOUT):  # the server noticed the client left
            while rt.eventlog.subscribers:
                await trio.sleep(0.01)


async def test_last_event_id_wins_and_no_position_means_live_only() -> None:
    async with server() as (rt, client):
        for name in ("a", "b", "c"):
            rt._record(joined(name))
        headers = {"Last-Event-ID": "2"}
        async with client.stream("GET", "/v1/events/stream?since=0", headers=headers) as resp:
            assert [r["seq"] for r in await Reader(resp).rows(1)] == [3]
        async with client.stream("GET", "/v1/events/stream") as resp:
            reader = Reader(resp)
            assert await reader.next() == ("retry", api.RETRY_MS)
            rt._record(joined("d"))
            assert [r["seq"] for r in await reader.rows(1)] == [4]
        # A position beyond anything numbered here comes from an earlier life of the node: all of it.
        async with client.stream("GET", "/v1/events/stream", headers={"Last-Event-ID": "99"}) as resp:
            assert [r["seq"] for r in await Reader(resp).rows(4)] == [1, 2, 3, 4]


async def test_keep_alive_comments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "KEEPALIVE_S", 0.05)
    async with server() as (_rt, client), client.stream("GET", "/v1/events/stream") as resp:
        reader = Reader(resp)
        assert await reader.next() == ("retry", api.RETRY_MS)
        assert await reader.next() == ("comment", "keep-alive")
        assert await reader.next() == ("comment", "keep-alive")


@pytest.mark.parametrize(
    ("query", "headers", "mentions"),
    [("?since=x", {}, "since must be an integer"), ("", {"Last-Event-ID": "abc"}, "Last-Event-ID")],
)
async def test_bad_position_is_400(query: str, headers: dict[str, str], mentions: str) -> None:
    async with server() as (rt, client):
        r = await client.get("/v1/events/stream" + query, headers=headers)
        assert r.status_code == 400 and mentions in r.json()["error"], r.text
        assert rt.eventlog.subscribers == 0


async def test_too_many_streams_is_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "MAX_STREAMS", 1)
    async with server() as (_rt, client), client.stream("GET", "/v1/events/stream") as first:
        await Reader(first).next()  # subscribed
        r = await client.get("/v1/events/stream")
        assert r.status_code == 503 and "too many" in r.json()["error"]


async def test_a_reader_that_falls_behind_gets_what_was_queued_then_the_end() -> None:
    log = EventLog(maxlen=100, subscriber_buffer=2)
    stream = sse_stream(log, None, keepalive=10.0)
    first = await stream.__anext__()  # subscribes
    assert first == f"retry: {api.RETRY_MS}\n\n".encode()
    for name in ("a", "b", "c", "d"):  # nobody reads: the queue of 2 overflows at c
        log.record(joined(name))
    assert log.stats["stream_dropped"] == 1 and log.subscribers == 0
    rest = [chunk async for chunk in stream]
    assert [c.split(b"\n")[0] for c in rest] == [b"id: 1", b"id: 2", b": too slow: reconnect with Last-Event-ID"]
