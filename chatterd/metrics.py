"""Prometheus metrics of a node (GET /metrics), with the official prometheus-client library.

Nothing is counted twice: :class:`NodeCollector` reads the node's counters (those of
``Runtime.health()["counters"]``), member table and queues when Prometheus scrapes. The one
thing the node does not keep is the distribution of failure-detection latencies: a
Histogram observed from member-failed events (``Runtime._record`` calls
:meth:`Metrics.observe` before the row goes into chatterd.eventlog).

Each runtime has its own :class:`~prometheus_client.CollectorRegistry`, never the global
one, so several runtimes in one process (tests, the simulator) do not clash. The API creates
it when it starts: prometheus-client is imported after the node has sent its joins.

Families (all prefixed ``chatter_``):

    members{state}                  gauge    members by state, this node included
    healthy                         gauge    1 if GET /v1/health says ok, else 0
    broadcast_queue_depth           gauge    messages waiting to be (re)transmitted
    event_buffer_size               gauge    rows held for GET /v1/events
    datagrams_in_total, datagrams_out_total, bytes_in_total, bytes_out_total
    malformed_total{reason}         counter  datagrams (or rumors) dropped as invalid
    duplicates_total, delivered_total{kind}, suspicions_total, refutations_total,
    deaths_total, starved_total, send_errors_total, internal_errors_total
    <name>_total                    counter  any other counter of /v1/health (handler_runs, ...)
    detection_latency_seconds       histogram  silence of a member until this node marked it dead
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sized
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from chatterd.core.events import MemberEvent
from chatterd.core.node import Node
from chatterd.health import STATES

PREFIX = "chatter_"

# Detection takes ~2.5 s with the lan profile (~1.3 s with local, up to ~6 s with one
# accuser): buckets around that, up to 10 s.
DETECTION_BUCKETS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.5, 10.0)

DELIVERY_KINDS = ("debug", "device", "view", "user")

# Counters exported under their own name even before they first move (help text).
CORE_COUNTERS = {
    "datagrams_in": "Datagrams received.",
    "datagrams_out": "Datagrams sent.",
    "bytes_in": "Bytes received in datagrams.",
    "bytes_out": "Bytes sent in datagrams.",
    "duplicates": "Rumors dropped because they were already delivered here.",
    "suspicions": "Times a member became suspect in this node's view.",
    "refutations": "Suspicions of this node that it refuted with a higher incarnation.",
    "deaths": "Members this node marked dead (declared by it or learned from others).",
    "starved": "Times this node's own timers ran late (CPU-starved or paused process).",
    "send_errors": "Datagrams the socket refused to send.",
    "internal_errors": "Exceptions caught in the protocol loop (bugs).",
}
# Help for other counters, exported once they exist; unknown ones get a generic help.
OTHER_HELP = {
    "stale": "Rumors dropped because they were older than max_message_age.",
    "unexpected": "Messages of a type a node does not expect from a peer.",
    "injects": "Messages accepted from chatter-inject.",
    "injects_rejected": "Messages from chatter-inject rejected as invalid.",
    "pushpull_sent": "State transfers sent (answers to joins, anti-entropy).",
    "pushpull_differ": "Anti-entropy digests received that differed from ours.",
    "suspicion_confirmations": "Further independent accusations of a suspect (they shorten its timeout).",
    "handler_runs": "Event handler runs.",
    "handler_failures": "Event handler runs that exited non-zero.",
    "handler_timeouts": "Event handler runs killed after their timeout.",
    "handler_dropped": "Events not handed to a handler because its queue was full.",
    "stream_dropped": "Event stream clients disconnected for falling behind (they resume from Last-Event-ID).",
}
# Counters split by a label: key "malformed_<reason>" → chatter_malformed_total{reason=...}.
# The unlabelled totals ("malformed", "delivered") are the sums of their labelled series.
LABELLED = {
    "malformed": ("reason", "Datagrams (or rumors) dropped as invalid, by reason.", ()),
    "delivered": ("kind", "Messages delivered here (once each), by kind.", DELIVERY_KINDS),
}
# Names of the other families: a /v1/health counter by one of these names is not exported.
OWN_FAMILIES = ("members", "healthy", "broadcast_queue_depth", "event_buffer_size", "detection_latency_seconds")
_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_]")


class Observed(Protocol):
    """What the collector reads: a :class:`chatterd.runtime.Runtime` or a stand-in."""

    @property
    def node(self) -> Node | None: ...

    @property
    def events(self) -> Sized: ...

    def health(self) -> dict[str, Any]: ...


class NodeCollector(Collector):
    """Reads the current values of one runtime at scrape time."""

    def __init__(self, rt: Observed) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        node = self.rt.node
        if node is None:  # not started yet
            return
        health = self.rt.health()

        members = GaugeMetricFamily(PREFIX + "members", "Members by state, this node included.", labels=["state"])
        for state in STATES:
            members.add_metric([state], health["members"].get(state, 0))
        yield members
        yield GaugeMetricFamily(
            PREFIX + "healthy",
            "1 if GET /v1/health says ok, 0 if degraded.",
            value=1.0 if health["status"] == "ok" else 0.0,
        )
        yield GaugeMetricFamily(
            PREFIX + "broadcast_queue_depth", "Messages waiting to be (re)transmitted.", value=len(node.queue)
        )
        yield GaugeMetricFamily(
            PREFIX + "event_buffer_size", "Rows held for GET /v1/events.", value=len(self.rt.events)
        )
        yield from counter_families(health["counters"])


def counter_families(counters: dict[str, Any]) -> Iterator[Metric]:
    """Prometheus counters from a /v1/health ``counters`` object, whatever its keys."""
    values = {k: v for k, v in counters.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    for key, help_text in CORE_COUNTERS.items():
        yield CounterMetricFamily(PREFIX + key, help_text, value=values.get(key, 0))
    for key, (label, help_text, known) in LABELLED.items():
        family = CounterMetricFamily(PREFIX + key, help_text, labels=[label])
        series = dict.fromkeys(known, 0) | {k[len(key) + 1 :]: v for k, v in values.items() if k.startswith(key + "_")}
        for value_label, v in sorted(series.items()):
            family.add_metric([value_label], v)
        yield family
    reserved = set(CORE_COUNTERS) | set(LABELLED) | set(OWN_FAMILIES)
    for key in sorted(values):
        name = _BAD_CHARS.sub("_", key).removesuffix("_total")
        if key in reserved or name in reserved or any(key.startswith(p + "_") for p in LABELLED):
            continue
        help_text = OTHER_HELP.get(key, f"Counter {key} of GET /v1/health.")
        yield CounterMetricFamily(PREFIX + name, help_text, value=values[key])


class Metrics:
    """The Prometheus registry of one runtime: the node collector and the detection histogram."""

    def __init__(self, rt: Observed) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(rt))
        self.detection_latency = Histogram(
            PREFIX + "detection_latency_seconds",
            "Seconds a failed member had been silent when this node marked it dead"
            " (estimated from its suspicion when this node did not watch it).",
            buckets=DETECTION_BUCKETS,
            registry=self.registry,
        )

    def observe(self, ev: MemberEvent) -> None:
        """Take note of a membership change (called for every member event)."""
        if ev.kind == "member-failed" and ev.after_s is not None:
            self.detection_latency.observe(ev.after_s)

    def exposition(self) -> bytes:
        """The text format of every metric (serve with prometheus_client.CONTENT_TYPE_LATEST)."""
        return generate_latest(self.registry)
