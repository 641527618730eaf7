"""A 5-node cluster of real chatterd processes: messages, devices, failure, leave and restart."""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest
import trio
from e2e_helpers import (
    DELIVERY_TIMEOUT,
    FAILURE_TIMEOUT,
    inject_ok,
    wait_delivered,
    wait_until,
)

from chatterd.testing import LocalCluster, LocalNode

pytestmark = pytest.mark.e2e

GATEWAY_ORIGIN = "541b10e7-d13a-45e8-8567-7d450ce86603"

DEBUG = '{"DebugMessage":{"text":"hello world"}}'
DEVICE_ADDED = (
    '{"DeviceGossip":{"DeviceAdded":{"origin":"541b10e7-d13a-45e8-8567-7d450ce86603",'
    '"name":"gateway","description":"ASUS Router model RT-N55U "}}}'
)
DEVICE_STATUS = (
    '{"DeviceGossip":{"DeviceStatus":{"origin":"541b10e7-d13a-45e8-8567-7d450ce86603",'
    '"name":"gateway","metrics":{"load":{"Text":"0.3"}}}}}'
)
DEVICE_REMOVED = '{"DeviceGossip":{"DeviceRemoved":{"origin":"541b10e7-d13a-45e8-8567-7d450ce86603","name":"gateway"}}}'
USER = '{"deploy":{"version":"1.2.3"}}'
STDIN_MESSAGE = b'{"DebugMessage":{"text":"from stdin"}}\n'

GATEWAY = {
    "origin": GATEWAY_ORIGIN,
    "name": "gateway",
    "description": "ASUS Router model RT-N55U ",
    "metrics": {"load": {"Text": "0.3"}},
}


async def _devices_everywhere(cluster: LocalCluster, want: list[dict[str, Any]]) -> bool:
    for n in cluster.running():
        if await n.try_get("/v1/devices") != want:
            return False
    return True


@pytest.mark.chatter_cluster(5)
async def test_messages_reach_every_node_exactly_once(chatter_cluster: LocalCluster) -> None:
    n0, n1, n2, n3, n4 = chatter_cluster.nodes
    posted: dict[str, tuple[LocalNode, str, dict[str, Any]]] = {}  # id → (entry node, kind, payload)
    for node, text, kind in [
        (n0, DEBUG, "debug"),
        (n1, DEVICE_ADDED, "device"),
        (n2, DEVICE_STATUS, "device"),
        (n3, USER, "user"),
    ]:
        mid = await inject_ok(node, text)
        posted[mid] = (node, kind, json.loads(text))
    mid = await inject_ok(n4, stdin=STDIN_MESSAGE)
    posted[mid] = (n4, "debug", {"DebugMessage": {"text": "from stdin"}})
    assert len(posted) == 5, "message ids must be distinct"

    await wait_delivered(chatter_cluster.nodes, list(posted))
    # Retransmissions of these messages end within a fraction of a second; leave them
    # time to arrive so that a duplicate delivery would show.
    await trio.sleep(1.0)
    for node in chatter_cluster.nodes:
        events = await node.events()
        for mid, (entry, kind, payload) in posted.items():
            rows = [e for e in events if e["id"] == mid]
            assert len(rows) == 1, f"{node.name} delivered {mid} {len(rows)} times: {rows}"
            row = rows[0]
            assert row["kind"] == kind, row
            assert row["origin"] == entry.name, row
            assert row["payload"] == payload, row

    # Device gossip: the gateway, with its description and its metrics, on every node.
    await wait_until(
        lambda: _devices_everywhere(chatter_cluster, [GATEWAY]),
        DELIVERY_TIMEOUT,
        "the gateway with description and metrics in every node's /v1/devices",
    )

    # Removal: gone everywhere (and it stays gone once anti-entropy had a chance to run).
    removed = await inject_ok(n4, DEVICE_REMOVED)
    await wait_delivered(chatter_cluster.nodes, [removed])
    await wait_until(
        lambda: _devices_everywhere(chatter_cluster, []), DELIVERY_TIMEOUT, "the gateway removed everywhere"
    )
    for node in chatter_cluster.nodes:
        assert await node.get("/v1/devices") == [], node.name
        assert len([e for e in await node.events() if e["id"] == removed]) == 1, node.name


@pytest.mark.chatter_cluster(5)
async def test_kill_leave_and_restart(chatter_cluster: LocalCluster) -> None:
    crashed, departing = chatter_cluster.node("n2"), chatter_cluster.node("n4")
    first_life = await chatter_cluster.nodes[0].members()

    # kill -9: every survivor declares it dead.
    crashed.kill()
    assert await crashed.wait_exit() == -signal.SIGKILL
    await chatter_cluster.wait_state("n2", "dead", timeout=FAILURE_TIMEOUT)
    for node in chatter_cluster.running():
        assert (await node.members())["n2"]["state"] == "dead", node.name
        failed = [e for e in await node.events() if e["kind"] == "member-failed" and e["origin"] == "n2"]
        assert len(failed) == 1, f"{node.name}: {failed}"

    # SIGTERM: a graceful leave, seen as "left" (not "dead") everywhere, and exit status 0.
    departing.kill(signal.SIGTERM)
    assert await departing.wait_exit() == 0, f"see {departing.log_path}"
    await chatter_cluster.wait_state("n4", "left", timeout=FAILURE_TIMEOUT)
    survivors_view = {"n0": "alive", "n1": "alive", "n2": "dead", "n3": "alive", "n4": "left"}

    async def survivors_agree() -> bool:
        return all([await chatter_cluster.states(node) == survivors_view for node in chatter_cluster.running()])

    await wait_until(survivors_agree, FAILURE_TIMEOUT, f"every survivor to see {survivors_view}")

    # Restart the crashed node (same command line, re-joins via --join): alive again everywhere,
    # as a new life (new id, higher incarnation).
    crashed.start()
    await chatter_cluster.wait_state("n2", "alive", timeout=FAILURE_TIMEOUT)
    await chatter_cluster.wait_converged(timeout=FAILURE_TIMEOUT)
    for node in chatter_cluster.running():
        m = (await node.members())["n2"]
        assert m["state"] == "alive", node.name
        assert m["id"] != first_life["n2"]["id"], node.name
        assert m["incarnation"] > first_life["n2"]["incarnation"], node.name

    # The restarted node learnt the whole state, the departed member included.
    async def restarted_view_complete() -> bool:
        states = await chatter_cluster.states(crashed)
        return states == {"n0": "alive", "n1": "alive", "n2": "alive", "n3": "alive", "n4": "left"}

    await wait_until(restarted_view_complete, FAILURE_TIMEOUT, "the restarted n2 to see n0-n3 alive and n4 left")

    # And it takes part in gossip again.
    mid = await inject_ok(crashed, {"DebugMessage": {"text": "back"}})
    await wait_delivered(chatter_cluster.running(), [mid])
