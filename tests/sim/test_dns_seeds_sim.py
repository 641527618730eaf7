"""Seeds that come from DNS after the start (the shell resolves names, Node.set_seeds): a node
waits for them, joins through them, starts a new cluster when the names stand for no one but
itself, and knocks again when it is alone and DNS names others."""

from __future__ import annotations

from chatterd.core.roles import role_tags
from chatterd.sim import Simulation


def test_a_node_waits_for_its_seeds_then_joins_through_them() -> None:
    sim = Simulation(seed=1)
    sim.start_cluster(3)
    node = sim.add_node("late", discover=True)
    sim.run_for(2)
    assert not node.joined and set(node.table.members) == {"late"}
    node.set_seeds([sim.addr_of["late"], sim.addr_of["n1"]], sim.now)
    sim.step(node)
    sim.run_for(3)
    assert node.joined and set(node.table.members) == {"n0", "n1", "n2", "late"}


def test_names_that_stand_for_us_alone_start_a_new_cluster_that_takes_its_roles() -> None:
    sim = Simulation(seed=2)
    node = sim.add_node("first", discover=True, tags=role_tags({"leader": 1}))
    sim.run_for(3)
    assert not node.joined and sim.holders("leader") == {}  # waiting for its seeds
    node.set_seeds([sim.addr_of["first"]], sim.now)
    sim.step(node)
    sim.run_for(3)
    assert node.joined and sim.holders("leader") == {"first": 1}


def test_a_lone_node_knocks_at_once_when_dns_names_others() -> None:
    sim = Simulation(seed=3)
    sim.start_cluster(2)
    node = sim.add_node("x", discover=True)
    node.set_seeds([sim.addr_of["x"]], sim.now)  # alone, by DNS
    sim.step(node)
    sim.run_for(1)
    node.set_seeds([sim.addr_of["x"], sim.addr_of["n0"]], sim.now)
    sim.step(node)
    sim.run_for(0.5)  # well before its reconnect timer
    assert set(node.table.members) == {"n0", "n1", "x"}
