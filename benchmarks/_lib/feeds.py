"""Pre-encoded datagrams from fake peers, and a core ``Node`` fed with them as the runtime does.

Used by the throughput benchmarks: the core alone (``drive``), its profile, the JSON
libraries (sample datagrams) and the sender process that blasts a real node.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from chatterd import views
from chatterd.core import wire
from chatterd.core.config import Config
from chatterd.core.node import Node
from chatterd.testing import HOST

Addr = tuple[str, int]
Feed = list[tuple[bytes, Addr]]


def debug_payload(i: int) -> dict[str, Any]:
    return {"DebugMessage": {"text": f"throughput benchmark message {i}: all quiet on node 7"}}


def step_payload(tag: str, rate: int, i: int) -> dict[str, Any]:
    return {"DebugMessage": {"text": f"throughput {tag} at {rate}/s: message {i}"}}


def user_payload(i: int) -> dict[str, Any]:
    return {"bench": {"seq": i, "text": "all quiet on node 7"}}


PAYLOADS: dict[str, Callable[[int], dict[str, Any]]] = {"debug": debug_payload, "user": user_payload}


def fake_peers(count: int, ports: Sequence[int] | None = None) -> list[tuple[str, Addr]]:
    ports = ports or [20_000 + i for i in range(count)]
    return [(f"peer{i}", (HOST, ports[i])) for i in range(count)]


def register_datagram(peers: Sequence[tuple[str, Addr]], inc: int = 1) -> bytes:
    """One datagram announcing every fake peer alive (from the first of them)."""
    alive: list[wire.Message] = [
        wire.Alive(node=name, id=str(uuid.UUID(int=i + 1)), addr=wire.format_addr(addr), inc=inc)
        for i, (name, addr) in enumerate(peers)
    ]
    return wire.encode(alive, peers[0][0])


def rumor_datagrams(
    count: int,
    per: int,
    peers: Sequence[tuple[str, Addr]],
    *,
    payload: str = "debug",
    prefix: str | None = None,
    hops: int = 3,
) -> Feed:
    """``count`` datagrams of ``per`` new rumors each, from the peers in turn (distinct ids)."""
    prefix = prefix or uuid.uuid4().hex[:16]
    make = PAYLOADS[payload]
    ts = int(time.time() * 1000)
    out: Feed = []
    k = 0
    for i in range(count):
        name, addr = peers[i % len(peers)]
        rumors: list[wire.Message] = []
        for _ in range(per):
            origin = peers[(k * 7 + 3) % len(peers)][0]
            rumors.append(
                wire.Rumor(id=f"{prefix}{k:016x}", origin=origin, ts=ts, lt=k + 1, hops=hops, payload=make(k))
            )
            k += 1
        out.append((wire.encode(rumors, name), addr))
    return out


def heartbeat_datagrams(count: int, peers: Sequence[tuple[str, Addr]]) -> Feed:
    dgrams = [(wire.encode([wire.Heartbeat(inc=1)], name), addr) for name, addr in peers]
    return [dgrams[i % len(dgrams)] for i in range(count)]


def core_node(config: Config, peers: Sequence[tuple[str, Addr]], seed: int = 1) -> Node:
    """A Node that knows every fake peer as a live member, with nothing left to send."""
    now = time.monotonic()
    node = Node(
        config, "bench", (HOST, 7000), now=now, wall_offset=time.time() - now, rng=random.Random(seed), node_id=None
    )
    node.receive(register_datagram(peers), peers[0][1], now)
    node.handle_timers(now)
    node.take_outgoing()
    node.take_events()
    alive = sum(1 for r in views.member_rows(node, now) if r["state"] == "alive")
    assert alive == len(peers) + 1, f"the core node sees {alive} live members, expected {len(peers) + 1}"
    return node


def drive(
    node: Node, feed: Sequence[tuple[bytes, Addr]], batch: int, keep: list[bytes] | None = None
) -> tuple[float, int, list[float]]:
    """Feed the node like the runtime does; returns (seconds, outgoing datagrams, checkpoint times).
    The outgoing datagrams are appended to ``keep`` when given (examined after the clock stops)."""
    n = len(feed)
    marks = {max(1, n * k // 10) for k in range(1, 11)}
    checkpoints: list[float] = []
    out = 0
    sent: list[list[tuple[bytes, Addr]]] = []
    clock = time.monotonic
    receive, timers, take_out, take_ev, deadline = (
        node.receive,
        node.handle_timers,
        node.take_outgoing,
        node.take_events,
        node.next_deadline,
    )
    t0 = time.perf_counter()
    done = 0
    for i in range(0, n, batch):
        now = clock()
        for data, addr in feed[i : i + batch]:
            receive(data, addr, now)
        timers(now)
        produced = take_out()
        out += len(produced)
        sent.append(produced)
        take_ev()
        deadline()
        before = done
        done = min(n, i + batch)
        if any(before < m <= done for m in marks):
            checkpoints.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - t0
    if keep is not None:
        keep.extend(data for produced in sent for data, _ in produced)
    return elapsed, out, checkpoints


Workload = tuple[str, Callable[[], Feed], int, int, bool]


def core_workloads(count: int, peers: Sequence[tuple[str, Addr]]) -> list[Workload]:
    """(name, feed maker, rumors per datagram, datagrams per turn, prefeed). Feeds are made just
    before use: a rumor older than max_message_age (60 s) would be dropped as stale."""

    def single() -> Feed:
        return rumor_datagrams(count, 1, peers)

    def packed() -> Feed:
        return rumor_datagrams(max(1, count // 6), 6, peers)

    return [
        ("new rumors, 1 per datagram, 1 datagram per turn", single, 1, 1, False),
        ("new rumors, 1 per datagram, 32 datagrams per turn", single, 1, 32, False),
        ("new rumors, 6 per datagram, 1 datagram per turn", packed, 6, 1, False),
        ("duplicates, 1 per datagram, 1 datagram per turn", single, 1, 1, True),
        ("duplicates, 6 per datagram, 1 datagram per turn", packed, 6, 1, True),
        ("heartbeats, 1 datagram per turn", lambda: heartbeat_datagrams(count, peers), 0, 1, False),
    ]
