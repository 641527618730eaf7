"""Vivaldi (core/coordinates.py) and the round-trip probe (core/rtt.py) by plain function
calls: the arithmetic, the latency filter, the wire's bounds, and hostile datagrams."""

import math
import random

import pytest

from chatterd.core import wire
from chatterd.core.config import LAN
from chatterd.core.coordinates import COORD_DIMENSIONS, COORD_WIRE_MAX, VIVALDI_ERROR_MAX, Coordinate, Vivaldi, origin
from chatterd.core.rtt import MAX_RTT_SLACK_FACTOR, from_wire, to_wire
from chatterd.sim import Simulation


def point(x: float, height: float = 1e-5, adjustment: float = 0.0, error: float = 0.5) -> Coordinate:
    return Coordinate(vec=(x,) + (0.0,) * (COORD_DIMENSIONS - 1), error=error, adjustment=adjustment, height=height)


def test_distance_is_the_norm_plus_both_heights_and_adjustments() -> None:
    a, b = point(0.003, height=0.001), point(-0.001, height=0.002)
    assert a.raw_distance(b) == pytest.approx(0.004 + 0.003)
    assert a.distance(b) == pytest.approx(0.007)
    adj = point(0.003, height=0.001, adjustment=0.0005)
    assert adj.distance(b) == pytest.approx(0.0075)
    # An adjustment that would make the distance negative is ignored.
    neg = point(0.003, height=0.001, adjustment=-1.0)
    assert neg.distance(b) == pytest.approx(neg.raw_distance(b))


def test_two_nodes_converge_on_their_round_trip() -> None:
    a, b = Vivaldi(random.Random(1)), Vivaldi(random.Random(2))
    for _ in range(200):
        a.update("b", b.coord, 0.050)
        b.update("a", a.coord, 0.050)
    assert a.coord.distance(b.coord) == pytest.approx(0.050, rel=0.05)
    assert a.coord.error < 0.2 and b.coord.error < 0.2  # both are sure of it now
    assert a.coord.error < VIVALDI_ERROR_MAX == origin().error


def test_the_latency_filter_is_a_median_of_three() -> None:
    v = Vivaldi(random.Random(1))
    assert v.filtered("p", 0.010) == 0.010
    assert v.filtered("p", 0.012) == pytest.approx(0.011)
    assert v.filtered("p", 5.0) == 0.012  # one slow answer does not count
    assert v.filtered("p", 0.011) == 0.012  # of 0.012, 5.0, 0.011: the oldest (0.010) left
    assert len(v.samples["p"]) == 3
    v.forget("p")
    assert "p" not in v.samples


def test_a_settled_node_moves_little_for_one_wild_sample() -> None:
    a, b = Vivaldi(random.Random(1)), Vivaldi(random.Random(2))
    for _ in range(100):
        a.update("b", b.coord, 0.020)
        b.update("a", a.coord, 0.020)
    before = a.coord.distance(b.coord)
    a.update("b", b.coord, 2.0)  # the filter keeps 0.020 as the median
    assert a.coord.distance(b.coord) == pytest.approx(before, rel=0.05)


def test_unusable_samples_are_refused() -> None:
    v = Vivaldi(random.Random(1))
    for rtt in (-0.001, 10.5, math.nan, math.inf):
        with pytest.raises(ValueError):
            v.update("p", origin(), rtt)
    bad = Coordinate(vec=(math.nan,) * COORD_DIMENSIONS)
    with pytest.raises(ValueError):
        v.update("p", bad, 0.01)
    short = Coordinate(vec=(0.0, 0.0))
    assert not short.is_valid()
    with pytest.raises(ValueError):
        v.update("p", short, 0.01)
    assert v.updates == 0 and v.coord == origin()


def test_gravity_pulls_toward_the_origin() -> None:
    v = Vivaldi(random.Random(1))
    v.coord = point(100.0, error=0.01)
    v._gravity()
    assert 99.0 < v.coord.vec[0] < 100.0  # (100/150)^2 = 0.44 s closer


def test_the_wire_form_is_bounded_integers() -> None:
    c = point(0.0123456, height=0.0004, adjustment=-0.00002, error=0.3)
    w = to_wire(c)
    assert w.vec[0] == 12346 and w.height == 400 and w.adjustment == -20 and w.error == 300
    back = from_wire(w)
    assert back.distance(point(0.0)) == pytest.approx(c.distance(point(0.0)), abs=2e-6)
    # Beyond the wire's range: held to it, so that what we send always decodes.
    huge = to_wire(point(1e9, height=1e9, error=99.0))
    assert huge.vec[0] == COORD_WIRE_MAX and huge.height == COORD_WIRE_MAX and huge.error == 1500
    data = wire.encode([wire.RttAck(t=7, c=huge)], "n1")
    assert wire.decode(data).m == [wire.RttAck(t=7, c=huge)]


@pytest.mark.parametrize(
    "coord",
    [
        "[[1,2,3,4,5,6,7],0,0,10]",  # 7 dimensions
        "[[1,2,3,4,5,6,7,8,9],0,0,10]",  # 9
        "[[1,2,3,4,5,6,7,8.5],0,0,10]",  # a float
        "[[1,2,3,4,5,6,7,NaN],0,0,10]",  # not JSON
        "[[1,2,3,4,5,6,7,100000001],0,0,10]",  # out of range
        "[[1,2,3,4,5,6,7,8],1501,0,10]",  # error above 1.5
        "[[1,2,3,4,5,6,7,8],0,0,-1]",  # a negative height
        "[[1,2,3,4,5,6,7,8],0,0]",  # a field missing
        '{"vec":[1,2,3,4,5,6,7,8],"error":0,"adjustment":0,"height":10}',  # not the array form
    ],
)
def test_a_malformed_coordinate_is_a_malformed_datagram(coord: str) -> None:
    data = b'{"v":1,"from":"n1","m":[{"type":"rtt-ack","t":1,"c":' + coord.encode() + b"}]}"
    with pytest.raises(wire.WireError) as e:
        wire.decode(data)
    assert e.value.reason in ("invalid", "malformed")


def two_nodes() -> Simulation:
    sim = Simulation(seed=1, config=LAN)
    sim.start_cluster(2)
    return sim


def test_hostile_answers_move_nothing() -> None:
    """An answer with a token we did not send, or from another address than the member's,
    is counted and ignored; a ping from a stranger is not answered."""
    sim = two_nodes()
    node = sim.nodes["n0"]
    sim.run_for(30)
    assert node.stats["rtt_samples"] >= 8  # the warm-up probes were answered
    before = (node.rtt.vivaldi.coord, dict(node.rtt.known), node.stats["rtt_samples"])
    forged = wire.Coord(vec=[COORD_WIRE_MAX] * COORD_DIMENSIONS, error=0, adjustment=0, height=COORD_WIRE_MAX)
    sim.send_raw(wire.encode([wire.RttAck(t=12345, c=forged)], "n1"), sim.addr_of["n1"], "n0")  # no such probe
    node.rtt.pending[777] = ("n1", sim.now)
    sim.send_raw(wire.encode([wire.RttAck(t=777, c=forged)], "n1"), ("sim", 999), "n0")  # right token, wrong addr
    sim.run_for(0.01)
    assert (node.rtt.vivaldi.coord, dict(node.rtt.known), node.stats["rtt_samples"]) == before
    assert node.stats["rtt_acks_unexpected"] == 2
    del node.rtt.pending[777]
    sim.wiretap = []
    sim.send_raw(wire.encode([wire.RttPing(t=1)], "x"), ("sim", 999), "n0")
    sim.run_for(0.01)
    assert [d for _, d, a in sim.wiretap if a == ("sim", 999)] == []
    assert node.stats["rtt_pings_ignored"] == 1
    # A malformed coordinate: the datagram is dropped and counted, like any malformed one.
    bad = b'{"v":1,"from":"n1","m":[{"type":"rtt-ack","t":1,"c":[[1,2],0,0,10]}]}'
    sim.send_raw(bad, sim.addr_of["n1"], "n0")
    sim.run_for(0.01)
    assert node.stats["malformed_invalid"] == 1


def test_pending_probes_are_bounded() -> None:
    sim = two_nodes()
    sim.nodes["n1"].rtt.enabled = False  # it ignores the probes: no answer ever comes
    sim.run_for(60)
    node = sim.nodes["n0"]
    assert node.stats["rtt_probes"] >= 16
    assert sim.nodes["n1"].stats["rtt_pings_ignored"] >= 10  # those sent after it stopped answering
    assert 1 <= len(node.rtt.pending) <= 8  # the oldest forgotten (and those older than 10 s)


def test_the_slack_is_zero_on_a_lan_and_bounded_on_any_link() -> None:
    sim = two_nodes()
    sim.run_for(30)
    rtt = sim.nodes["n0"].rtt
    assert rtt.slack("n1") == 0.0  # ~2 ms round trips
    assert rtt.slack("stranger") == 0.0  # no coordinate known: as without coordinates
    rtt.known["n1"] = point(0.0, height=0.5)  # ~1 s round trips: room for two of them
    rtt.generation += 1
    need = 2 * rtt.estimate("n0", "n1") + LAN.probe_interval - (LAN.suspect_after - LAN.probe_after)  # type: ignore[operator]
    assert rtt.slack("n1") == pytest.approx(need)
    rtt.known["n1"] = point(0.0, height=99.0)  # a liar: at most suspect_after more
    rtt.generation += 1
    assert rtt.slack("n1") == MAX_RTT_SLACK_FACTOR * LAN.suspect_after


def test_the_coordinates_of_members_gone_are_forgotten() -> None:
    sim = two_nodes()
    sim.run_for(30)
    rtt = sim.nodes["n0"].rtt
    assert set(rtt.known) == {"n1"} and "n1" in rtt.vivaldi.samples
    rtt.known["ghost"] = point(0.001)  # as if a member known once had been reaped since
    rtt.vivaldi.samples["ghost"] = [0.001]
    rtt._prune()
    assert set(rtt.known) == {"n1"} and "ghost" not in rtt.vivaldi.samples
