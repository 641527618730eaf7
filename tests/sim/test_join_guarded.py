"""Joining under the no-reflection rule: a seed answers a joiner it does not know yet with one
State chunk (the joiner's padded Join buys no more), the joiner then asks by digest as a
member; a join storm of 60 nodes still converges within a second, and a forged Join from a
spoofed address gets back no more bytes than it carried."""

from __future__ import annotations

import pytest

from chatterd.core import wire
from chatterd.core.membership import ALIVE
from chatterd.sim import Simulation


@pytest.mark.parametrize("seed", range(3))
def test_a_join_storm_of_60_converges_within_a_second(seed: int) -> None:
    sim = Simulation(seed=seed)
    names = sim.start_cluster(60, settle=0.0)
    sim.run_for(1.0)
    for name in names:
        assert sum(1 for m in sim.nodes[name].table.members.values() if m.state == ALIVE) == 60
    assert sum(sim.nodes[n].stats["reflection_withheld"] for n in names) > 0  # the guard was in play


def test_a_forged_join_to_a_big_cluster_gets_back_at_most_its_bytes() -> None:
    sim = Simulation(seed=4)
    sim.start_cluster(60)
    seed = sim.nodes["n0"]
    data = wire.encode([wire.Join(node="ghost", id="g", addr="victim:1", inc=1)], "ghost")
    seed.receive(data, ("victim", 1), sim.now)
    back = sum(len(d) for d, a in seed.take_outgoing() if a == ("victim", 1))
    assert back <= len(data) and seed.stats["reflection_withheld_bytes"] > 20 * len(data)
