"""Coordinates gossiped on the probes' answers (core/rtt.py): a node soon knows members it has
not probed; what it hears second-hand serves estimates only, never the detector's slack; a
forged entry is bounded and ignored; a dead member is knocked with a ping, not a digest."""

import statistics

import msgspec
import pytest

from chatterd.core import wire
from chatterd.core.config import LAN
from chatterd.core.coordinates import RTT_GOSSIP_MAX
from chatterd.core.rtt import to_wire
from chatterd.testing import SimFactory


def test_a_node_knows_members_it_never_probed(chatter_sim: SimFactory) -> None:
    """N = 30, 30 s after the start (measured, seeds 1-3: 21.5 of 29 members on average, 9-11
    of them first-hand; 26.6 after ten minutes). Without the gossip a node knows only the
    ones it probed."""
    sim = chatter_sim(seed=1, config=LAN)
    names = sim.start_cluster(30)
    sim.run_for(30)
    cover = [len(set(sim.nodes[n].rtt.known) | set(sim.nodes[n].rtt.heard)) for n in names]
    first = [len(sim.nodes[n].rtt.known) for n in names]
    assert statistics.mean(cover) >= 19 and statistics.mean(cover) >= statistics.mean(first) + 7
    obs = sim.nodes[names[0]]
    a, b = next((a, b) for a in obs.rtt.heard for b in obs.rtt.heard if a != b)
    assert a not in obs.rtt.known and obs.rtt.estimate(a, b) is not None  # chatterd rtt A B, third node
    assert obs.rtt.estimate(obs.name, a, heard=False) is None  # the query timeout's view: first-hand only


def test_second_hand_coordinates_do_not_move_the_detector(chatter_sim: SimFactory) -> None:
    """A member passing on a coordinate 50 s away for another member: kept for estimates,
    no slack (a liar must not delay another member's detection); entries of us, of the sender
    and of strangers are ignored and counted; more than RTT_GOSSIP_MAX make it malformed."""
    sim = chatter_sim(seed=2, config=LAN)
    names = sim.start_cluster(5)
    sim.run_for(3)
    me, liar, victim = sim.nodes[names[0]], names[1], names[2]
    me.rtt.known.pop(victim, None)
    far = me.rtt.vivaldi.coord.__class__((50.0,) + (0.0,) * 7, 0.1, 0.0, 1e-5)
    entries = [wire.HeardCoord(node=n, c=to_wire(far)) for n in (victim, "stranger")]
    token = 7
    me.rtt.pending[token] = (liar, sim.now)
    ack = wire.RttAck(t=token, c=to_wire(me.rtt.vivaldi.coord), g=entries)
    sim.send_raw(wire.encode([ack], liar), sim.nodes[liar].local.addr, me.name)
    sim.run_for(0.01)
    assert victim in me.rtt.heard and me.rtt.slack(victim) == 0.0
    assert me.stats["rtt_gossip_ignored"] >= 1
    too_many = msgspec.structs.replace(ack, g=entries[:1] * (RTT_GOSSIP_MAX + 1))
    with pytest.raises(wire.WireError):
        wire.decode(wire.encode([too_many], liar))


def test_a_dead_member_gets_knocks_not_digests(chatter_sim: SimFactory) -> None:
    """A killed member: the survivors' reconnection sends it 54-byte pings, no digest."""
    sim = chatter_sim(seed=3, config=LAN)
    names = sim.start_cluster(8)
    sim.run_for(20)
    dead_addr = sim.nodes[names[3]].local.addr
    sim.kill(names[3])
    sim.run_for(10)
    sim.wiretap = []
    sim.run_for(120)
    to_dead = [d for _, d, addr in sim.wiretap if addr == dead_addr]
    assert to_dead and all(b'"type":"rtt"' in d for d in to_dead)
    assert sum(n.stats["rtt_knocks"] for n in sim.nodes.values() if n.name != names[3]) >= 4
