"""GET /metrics and GET /v1/health, in-process: a real Runtime around a node of the simulator.

The collector reads the node when it is scraped; the text it produces must parse with
prometheus-client's own parser and show what the node knows. The health reasons are checked
on simulated nodes in virtual time (isolated, starved, not joined, leaving, internal errors).
"""

from __future__ import annotations

import random
from typing import Any

import httpx
import trio
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from chatterd.api import build_app
from chatterd.core.config import LAN
from chatterd.core.node import Node
from chatterd.health import RECENT_S, HealthWatch, member_counts
from chatterd.metrics import Metrics, counter_families
from chatterd.runtime import Options, Runtime
from chatterd.sim import Simulation

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[dict[str, str], dict[str, str], Samples]:
    """(family → type, family → help, (sample name, sorted labels) → value)."""
    types, helps, samples = {}, {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        helps[family.name] = family.documentation
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return types, helps, samples


def runtime_around(node: Node) -> Runtime:
    """A Runtime that was never run, given a node of the simulator."""
    rt = Runtime(Options(listen=("127.0.0.1", 0), name=node.name, config=LAN))
    rt.node = node
    return rt


async def test_collector_output_parses_and_reads_the_node() -> None:
    sim = Simulation(seed=3)
    sim.start_cluster(4)
    sim.inject("n1", {"DebugMessage": {"text": "hello"}})
    sim.inject("n2", {"deploy": {"version": "1.2.3"}})
    sim.run_for(1)
    node = sim.nodes["n0"]
    for data in (b"", b"{", b'{"v":9,"m":[]}'):  # empty, malformed, unknown version
        node.receive(data, ("sim", 99), sim.now)
    sim.kill("n3")
    sim.run_for(10)

    rt = runtime_around(node)
    rt.metrics = Metrics(rt)
    for r in sim.records:  # what the runtime's protocol loop would have recorded
        if r.observer == "n0":
            rt._record(r.event)
    failed = [r.event.after_s for r in sim.member_events("member-failed", "n3") if r.observer == "n0"]
    assert len(failed) == 1 and failed[0] is not None

    types, helps, samples = parse(rt.metrics.exposition().decode())

    assert all(name.startswith("chatter_") for name in types), types
    assert all(helps[name] for name in types), helps
    for name, kind in {
        "chatter_members": "gauge",
        "chatter_healthy": "gauge",
        "chatter_broadcast_queue_depth": "gauge",
        "chatter_event_buffer_size": "gauge",
        "chatter_datagrams_in": "counter",
        "chatter_datagrams_out": "counter",
        "chatter_bytes_in": "counter",
        "chatter_bytes_out": "counter",
        "chatter_malformed": "counter",
        "chatter_duplicates": "counter",
        "chatter_delivered": "counter",
        "chatter_suspicions": "counter",
        "chatter_refutations": "counter",
        "chatter_deaths": "counter",
        "chatter_starved": "counter",
        "chatter_internal_errors": "counter",
        "chatter_detection_latency_seconds": "histogram",
    }.items():
        assert types.get(name) == kind, (name, types.get(name))

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("chatter_members", state="alive") == 3
    assert value("chatter_members", state="dead") == 1
    assert value("chatter_members", state="suspect") == 0
    assert value("chatter_members", state="left") == 0
    stats = node.stats
    for key in ("datagrams_in", "datagrams_out", "bytes_in", "bytes_out", "duplicates", "suspicions", "deaths"):
        assert value(f"chatter_{key}_total") == stats[key], key
    assert stats["datagrams_in"] > 0 and stats["bytes_out"] > 0 and stats["duplicates"] > 0
    assert value("chatter_deaths_total") == 1
    assert value("chatter_refutations_total") == 0
    assert value("chatter_starved_total") == 0
    assert value("chatter_malformed_total", reason="empty") == 1
    assert value("chatter_malformed_total", reason="version") == 1
    malformed = {labels: v for (name, labels), v in samples.items() if name == "chatter_malformed_total"}
    assert sum(malformed.values()) == stats["malformed"] == 3
    assert value("chatter_delivered_total", kind="debug") == 1
    assert value("chatter_delivered_total", kind="user") == 1
    assert value("chatter_delivered_total", kind="device") == 0
    assert value("chatter_broadcast_queue_depth") == len(node.queue)
    assert value("chatter_event_buffer_size") == len(rt.events) > 0
    assert value("chatter_detection_latency_seconds_count") == 1
    assert abs(value("chatter_detection_latency_seconds_sum") - failed[0]) < 1e-9
    assert value("chatter_detection_latency_seconds_bucket", le="10.0") == 1
    assert value("chatter_detection_latency_seconds_bucket", le="0.5") == 0
    # The generic export of /v1/health counters: ones without a family of their own.
    assert value("chatter_pushpull_sent_total") == stats["pushpull_sent"] > 0

    # Read at scrape time: the next scrape sees the node's new counts.
    before = value("chatter_datagrams_in_total")
    node.receive(b"", ("sim", 99), sim.now)
    _, _, again = parse(rt.metrics.exposition().decode())
    assert again[("chatter_datagrams_in_total", ())] == before + 1
    assert again[("chatter_malformed_total", (("reason", "empty"),))] == 2


def test_health_counters_are_exported_whatever_their_names() -> None:
    counters: dict[str, Any] = {
        "datagrams_in": 5,
        "malformed": 2,
        "malformed_too_deep": 2,
        "delivered": 1,
        "delivered_device": 1,
        "handler_runs": 7,
        "handler_failures": 1,
        "some-new_thing": 4,
        "members": 9,  # would clash with chatter_members (a gauge): not exported
        "flag": True,  # not a counter
        "label": "x",
    }
    families = {f.name: f for f in counter_families(counters)}
    assert "chatter_members" not in families and "chatter_flag" not in families and "chatter_label" not in families
    runs = families["chatter_handler_runs"]
    assert runs.type == "counter" and runs.documentation == "Event handler runs."
    assert [(s.name, s.value) for s in runs.samples] == [("chatter_handler_runs_total", 7)]
    assert families["chatter_handler_failures"].samples[0].value == 1
    assert families["chatter_some_new_thing"].samples[0].value == 4
    assert families["chatter_deaths"].samples[0].value == 0  # core counters exist before they move
    assert {s.labels["reason"]: s.value for s in families["chatter_malformed"].samples} == {"too_deep": 2}
    delivered = {s.labels["kind"]: s.value for s in families["chatter_delivered"].samples}
    assert delivered == {"debug": 0, "device": 1, "user": 0, "view": 0}


async def test_each_runtime_has_its_own_registry() -> None:
    sim = Simulation(seed=1)
    sim.start_cluster(2, settle=2)
    a, b = (Metrics(runtime_around(sim.nodes[name])) for name in ("n0", "n1"))
    assert a.registry is not b.registry
    assert b"chatter_members" in a.exposition() and b"chatter_members" in b.exposition()
    assert REGISTRY.get_sample_value("chatter_detection_latency_seconds_count") is None


async def test_api_serves_metrics_and_a_503_health_with_reasons() -> None:
    now = trio.current_time()
    node = Node(LAN, "lonely", ("127.0.0.1", 1), now=now, wall_offset=0.0, rng=random.Random(1), seeds=[("x", 1)])
    rt = Runtime(Options(listen=("127.0.0.1", 0), name="lonely", config=LAN))
    rt.node = node
    transport = httpx.ASGITransport(app=build_app(rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://chatterd") as client:
        r = await client.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain; version=")
        _, _, samples = parse(r.text)
        assert samples[("chatter_healthy", ())] == 0
        assert samples[("chatter_members", (("state", "alive"),))] == 1

        r = await client.get("/v1/health")
        assert r.status_code == 503
        h = r.json()
        assert h["status"] == "degraded"
        assert h["reasons"] == ["not yet joined: no seed has answered"]
        for key in ("name", "id", "addr", "incarnation", "members", "uptime_s", "counters"):
            assert key in h, key

        node.sync.joined = True  # as if a seed had answered
        r = await client.get("/v1/health")
        assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["reasons"] == []


def reasons(sim: Simulation, name: str, watch: HealthWatch | None = None, internal_errors: int = 0) -> list[str]:
    node = sim.nodes[name]
    return (watch or HealthWatch()).reasons(node, member_counts(node), internal_errors, sim.now)


def test_health_of_a_settled_cluster_is_ok() -> None:
    sim = Simulation(seed=2)
    names = sim.start_cluster(5)
    assert all(reasons(sim, n) == [] for n in names)
    assert member_counts(sim.nodes["n0"]) == {"alive": 5, "suspect": 0, "dead": 0, "left": 0}


def test_isolated_node_is_degraded() -> None:
    # Not seed 2: there n0's timers stall after n2's death, a simulator bug (a node whose
    # deadline, by float rounding, equals the time its timer just fired is never woken again).
    sim = Simulation(seed=3)
    sim.start_cluster(3)
    sim.kill("n1")
    sim.run_for(10)
    assert reasons(sim, "n0") == []  # one other live member left
    sim.kill("n2")
    sim.run_for(10)
    assert reasons(sim, "n0") == ["isolated: no other live member, 2 dead"]


def test_starved_timers_degrade_for_a_minute() -> None:
    sim = Simulation(seed=2)
    sim.start_cluster(3)
    sim.pause("n1")
    sim.run_for(2)  # longer than a heartbeat interval: a timer falls due early in the pause, whatever its phase
    sim.resume("n1")
    sim.run_for(1)
    assert sim.nodes["n1"].stats["starved"] >= 1
    (reason,) = reasons(sim, "n1")
    assert reason.startswith("timers starved: ran late 1 s ago"), reason
    assert reasons(sim, "n0") == []
    sim.run_for(RECENT_S)
    assert reasons(sim, "n1") == []


def test_not_joined_and_leaving() -> None:
    sim = Simulation(seed=2)
    sim.start_cluster(2, settle=2)
    sim.kill("n0")
    sim.add_node("late", join=["n0"])  # its only seed is down
    sim.run_for(5)
    assert reasons(sim, "late") == ["not yet joined: no seed has answered"]
    sim.nodes["n1"].leave(sim.now)
    assert reasons(sim, "n1") == ["leaving"]


def test_internal_errors_degrade_for_a_minute_after_they_are_seen() -> None:
    sim = Simulation(seed=2)
    sim.start_cluster(2, settle=2)
    watch = HealthWatch()
    assert reasons(sim, "n0", watch, internal_errors=0) == []
    assert reasons(sim, "n0", watch, internal_errors=2) == [
        "internal errors: 2 since start, new ones seen in the last 60 s"
    ]
    sim.run_for(RECENT_S - 1)
    assert reasons(sim, "n0", watch, internal_errors=2) != []
    sim.run_for(2)
    assert reasons(sim, "n0", watch, internal_errors=2) == []
