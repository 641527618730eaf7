"""RUST_LOG=debug shows what a chatter-rs user expects (joins, gossip per message, suspicions,
refutations), RUST_LOG=trace every datagram; at the default level neither, on real nodes."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import trio
from e2e_helpers import FAILURE_TIMEOUT, inject_ok, wait_until

from chatterd.testing import LocalNode, local_cluster

pytestmark = pytest.mark.e2e


def rust_log(level: str) -> dict[str, str]:
    """The nodes' environment: RUST_LOG as a chatter-rs user sets it (the harness's CHATTER_LOG,
    which would win, emptied)."""
    return {"CHATTER_LOG": "", "RUST_LOG": level}


def log_lines(node: LocalNode) -> list[dict[str, Any]]:
    """The node's JSON log lines so far (the last one may be half written: skipped)."""
    out = []
    for line in node.log_path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


async def wait_logged(node: LocalNode, what: str, match: Any) -> list[dict[str, Any]]:
    """Wait until ``node`` logged a line for which ``match(line)`` holds; those lines."""

    async def found() -> bool:
        return any(match(e) for e in log_lines(node))

    await wait_until(found, FAILURE_TIMEOUT, f"{what} in {node.log_path}", interval=0.1)
    return [e for e in log_lines(node) if match(e)]


async def test_debug_shows_joins_gossip_suspicions_and_refutations(tmp_path: Path) -> None:
    async with local_cluster(3, log_dir=tmp_path, env=rust_log("debug")) as cluster:
        n0, n1, n2 = cluster.nodes
        # Joins: the Join each newcomer sent its seed, and the member_join every node logs.
        await wait_logged(n1, "n1's join sent", lambda e: e.get("event") == "gossip_sent" and e.get("kind") == "join")
        await wait_logged(n0, "member_join of n2", lambda e: e.get("event") == "member_join" and e.get("node") == "n2")

        # Gossip per message: a rumor, with its id, kind and peer, sent by n0 and received by n1.
        mid = await inject_ok(n0, {"DebugMessage": {"text": "debug me"}})

        def rumor(event: str) -> Any:
            return lambda e: e.get("event") == event and e.get("kind") == "rumor" and e.get("id") == mid

        sent = await wait_logged(n0, f"gossip_sent of {mid}", rumor("gossip_sent"))
        got = await wait_logged(n1, f"gossip_received of {mid}", rumor("gossip_received"))
        assert sent[0]["level"] == "debug" and sent[0]["logger"] == "chatterd.gossip" and ":" in sent[0]["peer"]
        assert got[0]["origin"] == "n0" and got[0]["at"] == "n1"

        # A false suspicion: n2 paused past suspect_after; the others suspect it, then hear
        # from it again, and n2 refutes with a higher incarnation that it gossips.
        inc = (await n0.members())["n2"]["incarnation"]
        n2.kill(signal.SIGSTOP)
        try:
            await wait_logged(n0, "n2 suspected", lambda e: e.get("event") in ("member_suspect", "member_suspected"))
        finally:
            n2.kill(signal.SIGCONT)
        refuted = await wait_logged(n2, "n2's refutation", lambda e: e.get("event") == "refuted")
        assert refuted[0]["inc"] > inc
        news = await wait_logged(
            n2,
            "n2's refutation gossiped",
            lambda e: (
                e.get("event") == "gossip_sent"
                and e.get("kind") == "alive"
                and e.get("node") == "n2"
                and e.get("inc", 0) > inc
            ),
        )
        assert news[0]["level"] == "debug"
        await wait_logged(
            n0,
            "the suspicion gossiped",
            lambda e: e.get("event", "").startswith("gossip_") and e.get("kind") == "suspect" and e.get("node") == "n2",
        )
        # Debug is not trace: no line per datagram.
        assert not [e for e in log_lines(n0) if e.get("event") == "datagram"]


async def test_trace_shows_every_datagram(tmp_path: Path) -> None:
    async with local_cluster(2, log_dir=tmp_path, env=rust_log("trace")) as cluster:
        n0, n1 = cluster.nodes
        mid = await inject_ok(n0, {"trace": {"me": 1}})

        def datagram(direction: str, kind: str) -> Any:
            return lambda e: e.get("event") == "datagram" and e.get("dir") == direction and kind in e.get("kinds", [])

        rumors = await wait_logged(n1, "a datagram carrying the rumor, received", datagram("in", "rumor"))
        line = rumors[0]
        assert line["level"] == "trace" and line["logger"] == "chatterd.wire" and line["sender"] == "n0"
        assert line["peer"] == n0.addr and line["bytes"] > 0 and line["sealed"] is False
        await wait_logged(n1, "a heartbeat sent", datagram("out", "hb"))  # upkeep too, at trace
        await wait_logged(n1, f"gossip_received of {mid}", lambda e: e.get("id") == mid)  # trace includes debug


async def test_at_info_there_are_neither(tmp_path: Path) -> None:
    async with local_cluster(2, log_dir=tmp_path, env=rust_log("info")) as cluster:
        n0, n1 = cluster.nodes
        mid = await inject_ok(n0, {"DebugMessage": {"text": "quiet"}})
        await wait_logged(n1, f"the delivery of {mid}", lambda e: e.get("event") == "debug_message")
        await trio.sleep(1.0)  # heartbeats and gossip going on meanwhile
        for node in cluster.nodes:
            noisy = [e for e in log_lines(node) if e.get("event") in ("datagram", "gossip_sent", "gossip_received")]
            assert noisy == [], noisy[:3]
            assert {e.get("level") for e in log_lines(node)} <= {"info", "warning"}
