"""GET /v1/events/stream against real chatterd processes: a stream opened on a live node
delivers the failure of a killed one as it happens, and a reconnection with Last-Event-ID
gets the same rows the stream had, once each."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from e2e_helpers import FAILURE_TIMEOUT

from chatterd.testing import local_cluster

pytestmark = pytest.mark.e2e


async def read_rows(lines: Any, rows: list[dict[str, Any]], until: Any, timeout: float) -> None:
    """Append the rows of the stream's events to ``rows`` until one satisfies ``until``."""
    event_id = None
    with trio.fail_after(timeout):
        async for line in lines:
            if line.startswith("id: "):
                event_id = line.removeprefix("id: ")
            elif line.startswith("data: "):
                rows.append(json.loads(line.removeprefix("data: ")))
                assert event_id == str(rows[-1]["seq"]), (event_id, rows[-1])  # the event's id is its seq
                if until(rows[-1]):
                    return
    raise AssertionError(f"the stream ended: {rows}")


async def test_stream_delivers_a_failure_after_a_kill(tmp_path: Path) -> None:
    async with local_cluster(3, log_dir=tmp_path) as cluster, httpx.AsyncClient(timeout=FAILURE_TIMEOUT) as client:
        n0, _, n2 = cluster.nodes
        url = n0.url + "/v1/events/stream"
        rows: list[dict[str, Any]] = []
        async with client.stream("GET", url, params={"since": "0"}) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            lines = resp.aiter_lines()
            # The replay: n0 saw both others join before the cluster converged.
            joined: set[str] = set()

            def both_joined(row: dict[str, Any]) -> bool:
                if row["kind"] == "member-join":
                    joined.add(row["origin"])
                return joined >= {"n1", "n2"}

            await read_rows(lines, rows, both_joined, FAILURE_TIMEOUT)

            n2.kill()
            assert await n2.wait_exit() == -signal.SIGKILL
            await read_rows(
                lines, rows, lambda r: r["kind"] == "member-failed" and r["origin"] == "n2", FAILURE_TIMEOUT * 2
            )
        failed = rows[-1]
        assert failed["payload"]["state"] == "dead" and failed["payload"]["name"] == "n2"
        seqs = [r["seq"] for r in rows]
        assert seqs == sorted(set(seqs)), "each row once, in order"

        # The stream holds exactly what GET /v1/events holds, up to the failure.
        polled = [r for r in await n0.events() if r["seq"] <= failed["seq"]]
        assert polled == rows

        # A reconnection from an earlier event replays the rest, without the ones before it.
        middle = rows[len(rows) // 2]["seq"]
        again: list[dict[str, Any]] = []
        async with client.stream("GET", url, headers={"Last-Event-ID": str(middle)}) as resp:
            await read_rows(resp.aiter_lines(), again, lambda r: r["seq"] == failed["seq"], FAILURE_TIMEOUT)
        assert again == [r for r in rows if r["seq"] > middle]
