"""Forged numbers in a simulated cluster: a node keeps its name and comes back alive after
forged news at the largest incarnations, and a phantom role claim delays an election by at
most Config.unknown_holder_hold."""

from __future__ import annotations

from chatterd.core import wire
from chatterd.core.config import PLAUSIBLE_STEP, WIRE_INT_MAX
from chatterd.core.events import RoleEvent
from chatterd.core.roles import role_tags
from chatterd.sim import Simulation

FORGER = ("forger", 666)


def forge(sim: Simulation, dest: str, messages: list[wire.Message]) -> None:
    """A datagram from an address no member has, as a spoofing attacker would send it."""
    node = sim.nodes[dest]
    node.receive(wire.encode(messages, "n9"), FORGER, sim.now)
    node.handle_timers(sim.now)
    sim.step(node)


def test_a_node_keeps_its_name_after_forged_news_at_the_largest_incarnations() -> None:
    sim = Simulation(seed=3)
    names = sim.start_cluster(5)
    victim = "n2"
    start = sim.nodes[victim].inc
    for _ in range(3):
        known = sim.nodes["n0"].table.members[victim].inc
        for inc in (WIRE_INT_MAX, known + PLAUSIBLE_STEP):
            for dest in names:
                forge(sim, dest, [wire.Dead(node=victim, inc=inc, by="n9"), wire.Left(node=victim, inc=inc)])
        sim.run_for(3)
    assert all(sim.state_of(victim, seen_by=n) == "alive" for n in names)
    victim_inc = sim.nodes[victim].inc
    assert victim_inc <= WIRE_INT_MAX - 2**61  # plenty of room left
    assert {sim.nodes[n].table.members[victim].inc for n in names} == {victim_inc}
    # Each round the forged news at known + PLAUSIBLE_STEP was taken, and refuted one above.
    assert victim_inc >= start + 3 * PLAUSIBLE_STEP and sim.nodes[victim].stats["refutations"] >= 3
    assert sim.nodes[victim].stats["malformed_implausible_inc"] >= 3  # the 2^63-1 ones


def test_a_phantom_claim_delays_the_election_by_at_most_the_bound() -> None:
    sim = Simulation(seed=5)
    sim.add_node("a", tags=role_tags({"db": 1}))
    sim.add_node("b", join=["a"], tags=role_tags({"db": 2}))
    sim.run_for(5)
    assert sim.holders("db") == {"b": 1}
    sim.kill("b")
    sim.run_for(0.5)
    # While b's death is not yet known, a forger claims the role for a member nobody has.
    forge(sim, "a", [wire.RoleClaim(role="db", holder="ghost", epoch=7, ts=1)])
    t0 = sim.now
    sim.run_for(15)
    acquired = [
        r for r in sim.records if isinstance(r.event, RoleEvent) and r.event.kind == "role-acquired" and r.time > t0
    ]
    assert [(r.observer, r.event.epoch) for r in acquired] == [("a", 8)]
    cfg = sim.config
    # b's death takes suspect_after + suspicion_max at most; the phantom claim's hold runs
    # from its arrival and ends within unknown_holder_hold.
    assert acquired[0].time - t0 <= max(cfg.unknown_holder_hold, cfg.suspect_after + cfg.suspicion_max) + 0.1
    assert sim.nodes["a"].stats["unknown_holder_expired"] == 1


def test_a_phantom_claim_in_a_quiet_cluster_is_taken_over_within_the_bound() -> None:
    sim = Simulation(seed=6)
    sim.add_node("a", tags=role_tags({"db": 1}))
    sim.add_node("c", join=["a"])
    sim.run_for(5)
    assert sim.holders("db") == {"a": 1}
    forge(sim, "c", [wire.RoleClaim(role="db", holder="ghost", epoch=3, ts=1)])
    t0 = sim.now
    sim.run_for(10)
    acquired = [r for r in sim.records if isinstance(r.event, RoleEvent) and r.event.kind == "role-acquired"]
    assert [(r.observer, r.event.epoch) for r in acquired][-1] == ("a", 4)
    assert acquired[-1].time - t0 <= sim.config.unknown_holder_hold + 0.5
    assert sim.holders("db") == {"a": 4}
