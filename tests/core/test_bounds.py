"""Hostile numbers: every integer on the wire is bounded, and nothing a peer sends leaves a
node unable to encode its own state or to refute news about itself (core/state.py,
MemberNews.plausible; core/election.py for epochs; core/rumors.py for Lamport time)."""

from __future__ import annotations

import pytest

from chatterd.core import wire
from chatterd.core.config import FIRST_SIGHT_MAX, LAMPORT_ADOPT_MAX, LAN, PLAUSIBLE_STEP, WIRE_INT_MAX
from chatterd.core.membership import ALIVE, DEAD
from chatterd.core.roles import Claim, role_tags
from tests.core.test_node import BID, B, C, node, sent, with_peer

TOO_BIG = WIRE_INT_MAX + 1


def _raw(message: str) -> bytes:
    return b'{"v":1,"from":"b","m":[' + message.encode() + b"]}"


@pytest.mark.parametrize(
    "message",
    [
        f'{{"type":"hb","inc":{TOO_BIG}}}',
        '{"type":"hb","inc":-1}',
        f'{{"type":"lease","inc":{TOO_BIG}}}',
        f'{{"type":"alive","node":"b","id":"x","addr":"h:1","inc":{TOO_BIG}}}',
        f'{{"type":"suspect","node":"b","inc":{TOO_BIG},"by":"c"}}',
        f'{{"type":"dead","node":"b","inc":{2**64},"by":"c"}}',
        f'{{"type":"left","node":"b","inc":{10**30}}}',
        f'{{"type":"join","node":"b","id":"x","addr":"h:1","inc":{TOO_BIG}}}',
        f'{{"type":"rumor","id":"r","origin":"b","ts":1,"lt":{TOO_BIG},"hops":1,"payload":{{}}}}',
        f'{{"type":"rumor","id":"r","origin":"b","ts":{TOO_BIG},"lt":1,"hops":1,"payload":{{}}}}',
        f'{{"type":"rumor","id":"r","origin":"b","ts":1,"lt":1,"hops":{TOO_BIG},"payload":{{}}}}',
        f'{{"type":"rumor","id":"r","origin":"b","ts":1,"lt":1,"hops":1,"payload":{{}},"boot":{TOO_BIG}}}',
        '{"type":"rumor","id":"r","origin":"b","ts":1,"lt":1,"hops":1,"payload":{},"seq":-3}',
        f'{{"type":"role","role":"db","holder":"b","epoch":{TOO_BIG},"ts":1}}',
        '{"type":"role","role":"db","holder":"b","epoch":0,"ts":1}',
        f'{{"type":"role","role":"db","holder":"b","epoch":1,"ts":{TOO_BIG}}}',
        f'{{"type":"state","roles":[{{"role":"db","holder":"b","epoch":{TOO_BIG},"ts":1}}]}}',
        f'{{"type":"state","members":[{{"node":"b","id":"x","addr":"h:1","inc":{TOO_BIG},"state":"alive"}}]}}',
        '{"type":"state","members":[{"node":"b","id":"x","addr":"h:1","inc":1,"state":"zombie"}]}',
        '{"type":"state","members":[{"node":"","id":"x","addr":"h:1","inc":1,"state":"alive"}]}',
        '{"type":"dead","node":"","inc":1,"by":"c"}',
        '{"type":"digest","h":[' + ",".join(["0"] * 63 + [str(2**32)]) + "]}",
        '{"type":"digest","h":[' + ",".join(["0"] * 63 + ["-1"]) + "]}",
        '{"type":"want","buckets":[64]}',
        '{"type":"want","buckets":[-1]}',
        f'{{"type":"have","s":[["b",{TOO_BIG},1,2,[]]],"since":1}}',
        f'{{"type":"have","s":[["b",1,1,2,[{TOO_BIG}]]],"since":1}}',
        f'{{"type":"have","s":[],"since":{TOO_BIG}}}',
        f'{{"type":"inject","rid":"r","payload":{{}},"hops":{TOO_BIG}}}',
        '{"type":"no-such-type"}',
    ],
)
def test_out_of_range_numbers_unknown_states_and_types_are_refused(message: str) -> None:
    with pytest.raises(wire.WireError) as e:
        wire.decode(_raw(message))
    assert e.value.reason == "invalid"
    n = with_peer()
    n.receive(_raw(message), B, 1.0)
    assert n.stats["malformed_invalid"] == 1
    n.handle_timers(1.0)
    assert n.next_deadline() >= 1.0


def test_the_largest_numbers_still_decode() -> None:
    m = f'{{"type":"dead","node":"b","inc":{WIRE_INT_MAX},"by":"c"}}'
    assert wire.decode(_raw(m)).m == [wire.Dead(node="b", inc=WIRE_INT_MAX, by="c")]
    assert wire.decode(wire.encode([wire.Heartbeat(inc=WIRE_INT_MAX)], "b")).m[0] == wire.Heartbeat(inc=WIRE_INT_MAX)


@pytest.mark.parametrize("kind", ["dead", "suspect", "alive", "left", "record"])
def test_news_about_us_at_the_largest_incarnation_is_dropped_and_we_stay_alive(kind: str) -> None:
    n = with_peer()
    inc = n.inc
    forged: wire.Message
    if kind == "dead":
        forged = wire.Dead(node="a", inc=WIRE_INT_MAX, by="b")
    elif kind == "suspect":
        forged = wire.Suspect(node="a", inc=WIRE_INT_MAX, by="b")
    elif kind == "alive":
        forged = wire.Alive(node="a", id=BID, addr="10.0.0.9:9", inc=WIRE_INT_MAX)
    elif kind == "left":
        forged = wire.Left(node="a", inc=WIRE_INT_MAX)
    else:
        rec = wire.MemberRecord(node="a", id=BID, addr="10.0.0.9:9", inc=WIRE_INT_MAX, state=DEAD)
        forged = wire.State(members=[rec])
    n.receive(wire.encode([forged], "b"), B, 1.0)
    assert n.inc == inc and n.table.members["a"].state == ALIVE
    assert n.stats["malformed_implausible_inc"] == 1 and n.stats["refutations"] == 0


def test_news_about_another_member_beyond_the_step_is_dropped() -> None:
    n = with_peer(inc=5)
    n.receive(wire.encode([wire.Dead(node="b", inc=5 + PLAUSIBLE_STEP + 1, by="c")], "c"), C, 1.0)
    assert n.table.members["b"].state == ALIVE and n.stats["malformed_implausible_inc"] == 1
    n.receive(wire.encode([wire.Dead(node="b", inc=5 + PLAUSIBLE_STEP, by="c")], "c"), C, 1.0)
    assert n.table.members["b"].state == DEAD
    # A first sighting may come in up to FIRST_SIGHT_MAX, not above.
    for name, inc in (("x", FIRST_SIGHT_MAX + 1), ("y", FIRST_SIGHT_MAX)):
        alive = wire.Alive(node=name, id=BID, addr="10.0.0.7:7", inc=inc)
        n.receive(wire.encode([alive], "c"), C, 1.0)
    assert "x" not in n.table.members and n.table.members["y"].inc == FIRST_SIGHT_MAX


def test_a_node_refutes_the_largest_news_others_can_have_taken_and_they_take_the_refutation() -> None:
    """b knows a at a.inc; a forger tells b (and a) 'a is dead' at a.inc + PLAUSIBLE_STEP, the
    most b accepts. a refutes one above, which b accepts: a is alive again on b."""
    a = node("a", addr=("10.0.0.1", 1))
    b = node("b", addr=B, node_id=BID)
    b.receive(a.sync.join_datagram(), ("10.0.0.1", 1), 0.0)
    for data, _ in b.take_outgoing():
        a.receive(data, B, 0.0)
    assert "b" in a.table.members
    forged = wire.encode([wire.Dead(node="a", inc=a.inc + PLAUSIBLE_STEP, by="x")], "x")
    b.receive(forged, C, 1.0)
    assert b.table.members["a"].state == DEAD
    a.receive(forged, C, 1.0)
    assert a.inc == b.table.members["a"].inc + 1 and a.stats["refutations"] == 1
    a.handle_timers(1.0)  # the refutation is gossiped (the forger's address gets nothing)
    for data, _ in a.take_outgoing():
        b.receive(data, ("10.0.0.1", 1), 1.1)
    b.handle_timers(1.1)
    assert b.table.members["a"].state == ALIVE and b.table.members["a"].inc == a.inc


def test_a_refutation_at_the_wire_bound_saturates_and_still_encodes() -> None:
    n = node(incarnation=WIRE_INT_MAX - 1)
    n.receive(wire.encode([wire.Dead(node="a", inc=WIRE_INT_MAX, by="b")], "b"), B, 1.0)
    assert n.inc == WIRE_INT_MAX
    n.receive(wire.encode([wire.Dead(node="a", inc=WIRE_INT_MAX, by="b")], "b"), B, 1.1)
    assert n.inc == WIRE_INT_MAX  # saturated, not 2^63
    for data, _ in n.take_outgoing():
        wire.decode(data)  # our own datagrams still decode anywhere
    assert n.set_tags({"k": "v"}, 1.2) and n.inc == WIRE_INT_MAX
    n.handle_timers(1.2)
    assert all(wire.decode(d) for d, _ in n.take_outgoing())


def test_a_claim_at_the_largest_epoch_is_dropped_and_elections_keep_room() -> None:
    n = node(tags=role_tags({"db": 1}))
    n.handle_timers(LAN.role_settle + 0.1)
    assert n.roles.held["db"].epoch == 1
    top = wire.RoleClaim(role="db", holder="b", epoch=WIRE_INT_MAX, ts=1)
    n.receive(wire.encode([top], "b"), B, 2.0)
    assert n.stats["malformed_implausible_epoch"] == 1 and n.roles.held["db"].epoch == 1
    # A claim at the most we accept supersedes ours; when its holder turns out to be nobody,
    # we take the role back one epoch above it, and that still encodes.
    high = wire.RoleClaim(role="db", holder="zz", epoch=1 + PLAUSIBLE_STEP, ts=1)
    n.receive(wire.encode([high], "b"), B, 2.0)
    assert "db" not in n.roles.held
    t = 2.0
    while "db" not in n.roles.held and t < 10:
        t = max(t, n.next_deadline())
        n.handle_timers(t)
    assert n.roles.held["db"].epoch == 2 + PLAUSIBLE_STEP
    assert t - 2.0 <= LAN.unknown_holder_hold + 1e-9
    assert all(wire.decode(d) for d, _ in n.take_outgoing())


def test_a_claim_of_a_role_first_seen_above_the_first_sight_ceiling_is_dropped() -> None:
    n = node()
    for epoch in (FIRST_SIGHT_MAX + 1, FIRST_SIGHT_MAX):
        n.receive(wire.encode([wire.State(roles=[Claim(role="db", holder="b", epoch=epoch, ts=1)])], "b"), B, 1.0)
    assert n.roles.claims["db"].epoch == FIRST_SIGHT_MAX and n.stats["malformed_implausible_epoch"] == 1


def test_a_rumor_at_an_implausible_lamport_time_is_dropped_and_our_next_rumor_encodes() -> None:
    n = with_peer()
    ts = int((1.0 + 1_800_000_000.0) * 1000)
    for i, lt in enumerate((WIRE_INT_MAX, FIRST_SIGHT_MAX)):
        r = wire.Rumor(id=f"r{i}", origin="b", ts=ts, lt=lt, hops=1, payload={"x": i})
        n.receive(wire.encode([r], "b"), B, 1.0)
    assert n.stats["malformed_implausible_lt"] == 1 and n.stats["delivered"] == 1
    n.inject({"y": 1}, 1.1)
    n.handle_timers(1.1)
    rumors = [m for _, m in sent(n.take_outgoing()) if isinstance(m, wire.Rumor) and m.origin == "a"]
    assert rumors and rumors[0].lt == LAMPORT_ADOPT_MAX + 2  # the clock followed up to 2^61 only
