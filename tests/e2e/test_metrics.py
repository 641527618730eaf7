"""GET /metrics and GET /v1/health on real chatterd processes: 3 nodes (the chatter_cluster
fixture's default), one killed."""

from __future__ import annotations

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from chatterd.testing import LocalCluster, LocalNode

pytestmark = pytest.mark.e2e

DETECTION_TIMEOUT = 30.0  # the death to show in /metrics (takes ~2.5 s)
HEALTHY_TIMEOUT = 90.0  # health to be ok: a starvation on a busy machine degrades a node for 60 s


async def scrape(node: LocalNode) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) → value of the node's /metrics; empty if it did not answer."""
    try:
        r = await node.client.get(node.url + "/metrics")
    except httpx.HTTPError:
        return {}
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


async def test_metrics_show_a_killed_node_and_survivors_stay_healthy(chatter_cluster: LocalCluster) -> None:
    n0, n1, n2 = chatter_cluster.nodes
    before = await scrape(n0)
    assert before[("chatter_members", (("state", "alive"),))] == 3
    assert before[("chatter_members", (("state", "dead"),))] == 0
    assert before[("chatter_datagrams_in_total", ())] > 0

    n2.kill()  # SIGKILL, by PID
    survivors = [n0, n1]
    last: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}

    async def death_in_metrics() -> bool:
        for n in survivors:
            m = last[n.name] = await scrape(n)
            if not (
                m.get(("chatter_members", (("state", "dead"),))) == 1
                and m.get(("chatter_members", (("state", "alive"),))) == 2
                and m.get(("chatter_deaths_total", ()), 0) >= 1
                and m.get(("chatter_detection_latency_seconds_count", ()), 0) >= 1
            ):
                return False
        return True

    with trio.move_on_after(DETECTION_TIMEOUT):
        while not await death_in_metrics():
            await trio.sleep(0.1)
    for n in survivors:
        m = last[n.name]
        assert m.get(("chatter_members", (("state", "dead"),))) == 1, (n.name, m)
        assert m.get(("chatter_deaths_total", ()), 0) >= 1, (n.name, m)
        assert m.get(("chatter_detection_latency_seconds_count", ()), 0) >= 1, (n.name, m)
        # Each observation is how long n2 had been silent when it was declared dead.
        assert m[("chatter_detection_latency_seconds_bucket", (("le", "10.0"),))] >= 1, m
        assert (
            0
            < m[("chatter_detection_latency_seconds_sum", ())]
            < 10 * m[("chatter_detection_latency_seconds_count", ())]
        ), m

    health: dict[str, tuple[int, dict[str, object]]] = {}

    async def survivors_healthy() -> bool:
        for n in survivors:
            try:
                r = await n.client.get(n.url + "/v1/health")
            except httpx.HTTPError:
                return False
            health[n.name] = (r.status_code, r.json())
            if r.status_code != 200:
                return False
        return True

    with trio.move_on_after(HEALTHY_TIMEOUT):
        while not await survivors_healthy():
            await trio.sleep(0.2)
    for n in survivors:
        status, h = health.get(n.name, (0, {}))
        assert status == 200 and h["status"] == "ok" and h["reasons"] == [], h
        assert h["members"] == {"alive": 2, "suspect": 0, "dead": 1, "left": 0}, h
