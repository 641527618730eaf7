"""Fuzz tests (hypothesis) of the decoder and of a live Node: random and mutated datagrams
never raise anything but WireError from the decoder, and a Node fed them from several fake
peers (members and strangers) between timer turns never raises, never leaves its next
deadline in the past, answers strangers with no more bytes than they sent, only ever sends
datagrams that decode, and keeps its tables, queues and seen-sets within their bounds.
Derandomized with a fixed number of examples: the same cases every run, no flakes."""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatterd.core import wire
from chatterd.core.config import LAN, MAX_GAPS_KEPT, MAX_INJECT_IDS, WIRE_INT_MAX
from chatterd.core.digest import BUCKETS
from chatterd.core.membership import MemberState
from chatterd.core.node import Node
from chatterd.core.roles import Claim

WALL = 1_800_000_000.0
TS = int(WALL * 1000)
A, B, C, D = ("10.0.0.1", 1), ("10.0.0.2", 2), ("10.0.0.3", 3), ("192.0.2.9", 9)
PEERS = [(B, "b"), (C, "c"), (D, "evil"), (D, None)]
NUMBERS = [0, 1, -1, 2, 63, 64, 2**31, 2**32, 2**62, WIRE_INT_MAX, WIRE_INT_MAX + 1, 2**64, 10**30, TS]

_rec = wire.MemberRecord(node="c", id="id-c", addr="10.0.0.3:3", inc=TS, state=MemberState.ALIVE)
_dev = wire.DeviceRecord(origin="o", name="d", description="x", description_v=(3, "m1"), present_v=(3, "m1"))
SAMPLES: list[list[wire.Message]] = [
    [wire.Heartbeat(inc=TS)],
    [wire.Lease(inc=TS)],
    [wire.Alive(node="c", id="id-c", addr="10.0.0.3:3", inc=TS, tags={"role:db": "1"})],
    [wire.Suspect(node="a", inc=TS, by="b"), wire.Dead(node="c", inc=TS, by="b")],
    [wire.Left(node="c", inc=TS + 1)],
    [wire.Rumor(id="r1", origin="b", ts=TS, lt=5, hops=3, payload={"DebugMessage": {"text": "x"}}, boot=TS, seq=1)],
    [wire.Rumor(id="r2", origin="b", ts=TS, lt=6, hops=3, payload={"DebugMessage": {"text": "y"}}, boot=TS, seq=900)],
    [
        wire.Rumor(
            id="r3",
            origin="b",
            ts=TS,
            lt=7,
            hops=2,
            payload={"DeviceGossip": {"DeviceAdded": {"origin": "o", "name": "d", "description": "x"}}},
        )
    ],
    [wire.Join(node="j", id="id-j", addr="192.0.2.9:9", inc=TS)],
    [wire.State(members=[_rec], devices=[_dev], roles=[Claim(role="db", holder="c", epoch=2, ts=TS)], reply=True)],
    [wire.DigestMsg(h=[7] * BUCKETS)],
    [wire.Want(buckets=[0, 5, 63])],
    [wire.Have(s=[("b", TS, 1, 40, [3, 4, 5])], since=TS - 1000, all=False)],
    [wire.Have(s=[], since=0)],
    [wire.RoleClaim(role="db", holder="zz", epoch=3, ts=TS)],
    [wire.Inject(rid="q1", payload={"DebugMessage": {"text": "hi"}})],
    [wire.InjectAck(rid="q1", id="m", node="b"), wire.InjectNack(rid="q2", error="no")],
    [wire.Query(id="qq", origin="b", name="_keys", ts=TS, timeout=3000, payload={"op": "list"})],
    [wire.Query(id="qr", origin="c", name="who", ts=TS, timeout=60_000, payload={"x": [1]}, again=True)],
    [wire.Answer(id="qq", node="c", payload={"keys": ["k"], "primary": "k"}, error="")],
]
ENCODED = [wire.encode(m, "b") for m in SAMPLES]

json_values = st.recursive(
    st.none() | st.booleans() | st.sampled_from(NUMBERS) | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*path, i))
    return out


def _set(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    value[path[0]] = _set(value[path[0]], path[1:], new)
    return value


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid datagram changed in a few places: JSON values swapped for hostile ones, keys
    dropped, bytes flipped, cut or inserted."""
    data = draw(st.sampled_from(ENCODED))
    kind = draw(st.sampled_from(["json", "json", "json", "bytes", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    if kind == "bytes":
        buf = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            op = draw(st.sampled_from(["flip", "cut", "insert"]))
            i = draw(st.integers(0, max(len(buf) - 1, 0)))
            if op == "flip" and buf:
                buf[i] = draw(st.integers(0, 255))
            elif op == "cut":
                del buf[i:]
            else:
                buf[i:i] = draw(st.binary(min_size=1, max_size=8))
        return bytes(buf)
    obj = json.loads(data)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(obj)
        path = draw(st.sampled_from(paths))
        if path and draw(st.booleans()) and isinstance(path[-1], str):
            parent = obj
            for p in path[:-1]:
                parent = parent[p]
            parent.pop(path[-1], None)
        else:
            obj = _set(obj, path, draw(json_values))
    return json.dumps(obj).encode()


def datagrams() -> st.SearchStrategy[bytes]:
    return st.one_of(mutated(), st.sampled_from(ENCODED), st.binary(max_size=64))


@settings(max_examples=600, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(datagrams())
def test_the_decoder_raises_nothing_but_wire_error(data: bytes) -> None:
    try:
        dgram = wire.decode(data, LAN.max_receive, LAN.max_payload_depth)
    except wire.WireError:
        return
    assert dgram.m and dgram.v == wire.VERSION
    wire.encode(dgram.m, dgram.sender)  # whatever decodes re-encodes


def _live_node() -> Node:
    n = Node(LAN, "a", A, now=0.0, wall_offset=WALL, rng=random.Random(3), tags={"role:db": "1"})
    for peer, name in ((B, "b"), (C, "c")):
        assert name is not None
        alive = wire.Alive(node=name, id=f"id-{name}", addr=wire.format_addr(peer), inc=TS)
        n.receive(wire.encode([alive], name), peer, 0.0)
    n.handle_timers(0.0)
    n.take_outgoing()
    return n


def _check_bounds(n: Node, received: int) -> None:
    assert len(n.table) <= 3 + 2 * received  # a datagram can name a couple of members at most here
    assert len(n.rumors.seen) <= LAN.seen_max
    assert len(n.rumors.injects) <= MAX_INJECT_IDS
    for stream in n.repair.store.streams.values():
        assert len(stream.gaps) <= MAX_GAPS_KEPT
    assert n.inc <= WIRE_INT_MAX and n.rumors.lt <= WIRE_INT_MAX
    assert all(c.epoch <= WIRE_INT_MAX for c in n.roles.claims.values())


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(datagrams(), st.sampled_from(PEERS), st.floats(0.0, 1.5)), min_size=1, max_size=25))
def test_a_live_node_survives_hostile_datagrams_between_timers(steps: list[tuple[bytes, Any, float]]) -> None:
    n = _live_node()
    now = 0.0
    for i, (data, (src, sender), dt) in enumerate(steps):
        if sender is not None and data.startswith(b'{"v":1'):
            data = data.replace(b'"from":"b"', b'"from":"' + sender.encode() + b'"')
        stranger = not n.table.has_addr(src)
        n.receive(data, src, now)
        answer = [(d, a) for d, a in n.take_outgoing()]
        if stranger:
            assert sum(len(d) for d, a in answer if a == src) <= len(data)
        now += dt
        n.handle_timers(now)
        assert n.next_deadline() >= now
        answer += n.take_outgoing()
        for d, _ in answer:
            wire.decode(d, LAN.max_receive, LAN.max_payload_depth)  # we only ever send what decodes
        n.take_events()
        _check_bounds(n, i + 1)
    # And time goes on normally afterwards: the node still runs its timers, in order.
    for _ in range(20):
        now = max(now, n.next_deadline())
        n.handle_timers(now)
        assert n.next_deadline() >= now
        for d, _ in n.take_outgoing():
            wire.decode(d, LAN.max_receive, LAN.max_payload_depth)
