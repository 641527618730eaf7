"""Unit tests of Node itself: datagrams and time in, datagrams and events out, no simulator.

Each test plays one or two peers by hand: it builds the datagrams they would send with
``wire.encode`` and reads what the node answers from ``take_outgoing``.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from chatterd.core import wire
from chatterd.core.config import LAN
from chatterd.core.events import Delivery, MemberEvent
from chatterd.core.node import Node

A = ("10.0.0.1", 1)  # never sent to: the node only returns datagrams
B = ("10.0.0.2", 2)
C = ("10.0.0.3", 3)
BID = "00000000-0000-4000-8000-00000000000b"


def node(name: str = "a", addr: tuple[str, int] = A, **kw: Any) -> Node:
    return Node(LAN, name, addr, now=0.0, wall_offset=1_800_000_000.0, rng=random.Random(7), **kw)


def msgs_to(n: Node, dest: tuple[str, int]) -> list[wire.Message]:
    return [m for data, addr in n.take_outgoing() if addr == dest for m in wire.decode(data).m]


def sent(out: list[tuple[bytes, tuple[str, int]]]) -> list[tuple[tuple[str, int], wire.Message]]:
    return [(addr, m) for data, addr in out for m in wire.decode(data).m]


def with_peer(inc: int = 5) -> Node:
    """Node a, which has just heard that b is alive."""
    n = node()
    alive = wire.Alive(node="b", id=BID, addr="10.0.0.2:2", inc=inc)
    n.receive(wire.encode([alive], "b"), B, 0.0)
    n.handle_timers(0.0)  # gossips the news at once (flush_delay 0)
    n.take_outgoing()
    assert [(e.kind, e.node) for e in n.take_events() if isinstance(e, MemberEvent)] == [("member-join", "b")]
    return n


def member_events(n: Node) -> list[tuple[str, str]]:
    return [(e.kind, e.node) for e in n.take_events() if isinstance(e, MemberEvent)]


def test_a_joining_node_knocks_on_its_seed_until_it_answers() -> None:
    n = node(seeds=[B])
    n.handle_timers(0.0)
    joins = [m for m in msgs_to(n, B) if isinstance(m, wire.Join)]
    assert [j.node for j in joins] == ["a"]
    n.handle_timers(LAN.join_retry_interval)
    assert any(isinstance(m, wire.Join) for m in msgs_to(n, B))  # retried
    state = wire.State(members=[wire.MemberRecord(node="b", id=BID, addr="10.0.0.2:2", inc=1, state="alive")])
    n.receive(wire.encode([state], "b"), B, 1.1)
    assert n.joined and member_events(n) == [("member-join", "b")]
    n.handle_timers(2 * LAN.join_retry_interval + 0.1)
    assert not any(isinstance(m, wire.Join) for m in msgs_to(n, B))  # no more knocking


def test_a_seed_answers_a_join_with_its_state() -> None:
    n = node()
    join = wire.Join(node="b", id=BID, addr="10.0.0.2:2", inc=1, pad=" " * 1200)  # as sync.join_datagram pads it
    n.receive(wire.encode([join], "b"), B, 0.0)
    states = [m for m in msgs_to(n, B) if isinstance(m, wire.State)]
    assert {r.node for s in states for r in s.members} == {"a", "b"}
    assert member_events(n) == [("member-join", "b")]


def test_heartbeats_go_to_the_monitors_on_the_shared_grid() -> None:
    n = with_peer()
    beats: list[float] = []
    t = 0.0
    for _ in range(1000):
        if len(beats) == 3:
            break
        d = n.next_deadline()
        assert d >= t  # never a deadline in the past
        t = d
        n.receive(wire.encode([wire.Heartbeat(inc=5)], "b"), B, t)  # b lives (and is not probed)
        n.handle_timers(t)
        hbs = [m for m in msgs_to(n, B) if isinstance(m, wire.Heartbeat)]
        assert hbs in ([], [wire.Heartbeat(inc=n.inc)])
        if hbs:
            beats.append(t)
    wall = [(b + 1_800_000_000.0) / LAN.heartbeat_interval for b in beats]
    assert all(abs(w - round(w)) < 1e-3 for w in wall)  # multiples of the interval in wall time
    assert [round(y - x, 6) for x, y in itertools.pairwise(beats)] == [LAN.heartbeat_interval] * 2


def test_a_silent_peer_is_suspected_then_declared_dead() -> None:
    n = with_peer()
    t = 0.0
    while t < LAN.suspect_after + 0.01:  # b says nothing; a's timers keep running
        t = n.next_deadline()
        n.handle_timers(t)
    out = sent(n.take_outgoing())
    assert (B, wire.Suspect(node="b", inc=5, by="a")) in out  # told, so it could refute
    assert member_events(n) == [("member-suspect", "b")]
    while n.table.members["b"].state == "suspect":
        t = n.next_deadline()
        n.handle_timers(t)
    # a is b's only monitor, so its accusation is every confirmation there can be (Lifeguard):
    # the shortest suspicion timeout, counted from when b was last heard (t = 0)
    assert abs(t - (LAN.suspect_after + LAN.suspicion_min)) < 0.01
    events = [e for e in n.take_events() if isinstance(e, MemberEvent)]
    assert [(e.kind, e.node) for e in events] == [("member-failed", "b")]
    assert events[0].after_s is not None and events[0].after_s >= LAN.suspect_after


def test_heartbeats_keep_a_peer_alive() -> None:
    n = with_peer()
    t = 0.0
    while t < 10.0:
        t = n.next_deadline()
        n.receive(wire.encode([wire.Heartbeat(inc=5)], "b"), B, t)
        n.handle_timers(t)
    assert n.table.members["b"].state == "alive" and member_events(n) == []


def test_news_of_its_own_death_is_refuted_at_a_higher_incarnation() -> None:
    n = with_peer()
    inc = n.inc
    n.receive(wire.encode([wire.Dead(node="a", inc=inc, by="b")], "b"), B, 1.0)
    assert n.inc == inc + 1 and n.stats["refutations"] == 1
    assert wire.Alive(node="a", id=n.id, addr="10.0.0.1:1", inc=inc + 1) in msgs_to(n, B)  # answered at once
    n.handle_timers(1.0)  # the refutation is also gossiped
    alive = [m for _, m in sent(n.take_outgoing()) if isinstance(m, wire.Alive) and m.node == "a"]
    assert alive and all(m.inc == inc + 1 for m in alive)


def test_a_backlog_of_stale_accusations_raises_the_incarnation_once() -> None:
    # A node resumed after a pause finds many old Suspect/Dead of itself in its buffer: the
    # first (at its incarnation) is refuted; older ones only get the current Alive back.
    n = with_peer()
    inc = n.inc
    n.receive(wire.encode([wire.Suspect(node="a", inc=inc, by="b")], "b"), B, 1.0)
    stale = wire.encode([wire.Suspect(node="a", inc=inc, by="b"), wire.Dead(node="a", inc=inc, by="b")], "b")
    for _ in range(10):
        n.receive(stale, B, 1.0)
    assert n.inc == inc + 1 and n.stats["refutations"] == 1 and n.stats["stale_accusations"] == 20
    told = [m for m in msgs_to(n, B) if isinstance(m, wire.Alive) and m.node == "a"]
    assert told and all(m.inc == inc + 1 for m in told)


def test_a_rumor_is_delivered_once_and_forwarded_with_one_hop_less() -> None:
    n = with_peer()
    r = wire.Rumor(id="m1", origin="b", ts=1_800_000_000_000, lt=3, hops=2, payload={"DebugMessage": {"text": "hi"}})
    for _ in range(3):
        n.receive(wire.encode([r], "b"), B, 0.5)
    deliveries = [e for e in n.take_events() if isinstance(e, Delivery)]
    assert [(d.id, d.kind) for d in deliveries] == [("m1", "debug")]
    assert n.stats["duplicates"] == 2
    n.handle_timers(0.5)
    fwd = [m for _, m in sent(n.take_outgoing()) if isinstance(m, wire.Rumor)]
    assert fwd and all(m.hops == 1 for m in fwd)


def test_chatter_inject_retries_are_idempotent() -> None:
    n = node()
    req = wire.encode([wire.Inject(rid="r1", payload={"DebugMessage": {"text": "x"}}, pad=" " * 300)])
    n.receive(req, C, 0.0)
    n.receive(req, C, 0.2)  # the ack was lost; chatter-inject sends again
    acks = [m for m in msgs_to(n, C) if isinstance(m, wire.InjectAck)]
    assert len(acks) == 2 and acks[0].id == acks[1].id
    assert [e.id for e in n.take_events() if isinstance(e, Delivery)] == [acks[0].id]
    bad = wire.encode([wire.Inject(rid="r2", payload={"DebugMessage": {"text": 3}}, pad=" " * 300)])
    n.receive(bad, C, 0.3)
    assert [type(m) for m in msgs_to(n, C)] == [wire.InjectNack]


def test_a_malformed_datagram_is_counted_and_answered_with_nothing() -> None:
    n = with_peer()
    for data in (b"", b"{", b'{"v":1,"m":[{"type":"hb","inc":-1}]}', b'{"v":9,"m":[]}', b"\xff" * 50):
        n.receive(data, C, 1.0)
    assert n.stats["malformed"] == 5
    assert n.take_outgoing() == [] and n.take_events() == []
    assert n.next_deadline() >= 0.0


def test_leave_tells_every_live_member_and_stops_the_heartbeats() -> None:
    n = with_peer()
    n.leave(1.0)
    assert msgs_to(n, B) == [wire.Left(node="a", inc=n.inc)]
    n.handle_timers(5.0)
    assert n.take_outgoing() == []
    assert n.table.members["a"].state == "left"


def test_the_core_logs_through_the_logger_it_is_given() -> None:
    lines: list[tuple[str, str, dict[str, Any]]] = []

    class Recorder:
        def __init__(self, target: str) -> None:
            self.target = target

        def debug(self, event: str, **kw: Any) -> None:
            lines.append((self.target, event, kw))

        info = warning = debug

    n = node(logger=Recorder)
    n.receive(b"{", C, 0.0)
    n.set_tags({"dc": "east"}, 0.0)
    assert ("chatterd.wire", "datagram_dropped") in [(t, e) for t, e, _ in lines]
    assert ("chatterd.membership", "tags_changed") in [(t, e) for t, e, _ in lines]


def test_after_a_stall_the_heartbeats_go_back_onto_the_shared_grid() -> None:
    """A node whose loop stalled for more than an interval (a busy start-up) must not stay off
    the grid: its sends and its peers' heartbeats would then wake it separately, every time."""
    n = with_peer()
    late = 3.0 + 0.37 * LAN.heartbeat_interval  # a stall, ending between two grid points
    n.handle_timers(late)
    assert any(isinstance(m, wire.Heartbeat) for m in msgs_to(n, B))  # sent at once
    beats: list[float] = []
    t = late
    for _ in range(1000):
        if len(beats) == 2:
            break
        t = n.next_deadline()
        n.receive(wire.encode([wire.Heartbeat(inc=5)], "b"), B, t)
        n.handle_timers(t)
        if any(isinstance(m, wire.Heartbeat) for m in msgs_to(n, B)):
            beats.append(t)
    wall = [(b + 1_800_000_000.0) / LAN.heartbeat_interval for b in beats]
    assert all(abs(w - round(w)) < 1e-3 for w in wall), beats
    assert beats[0] - late < LAN.heartbeat_interval
