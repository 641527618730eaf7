"""force-leave in virtual time: a dead member moves to left on every node (and is no longer
tried for reconnection); a live, suspect, unknown member or the node itself is refused;
--prune erases it everywhere and it stays erased (a node that missed the prune is told by
push-pull); a forged prune is dropped; a pruned member that restarts comes back."""

from __future__ import annotations

import pytest

from chatterd.core import wire
from chatterd.core.events import MemberEvent
from chatterd.core.forceleave import ForceLeaveError
from chatterd.sim import Simulation
from chatterd.testing import SimFactory

N = 8


def dead_everywhere(sim: Simulation, name: str, timeout: float = 15.0) -> None:
    end = sim.now + timeout
    while sim.now < end:
        sim.run_for(0.25)
        if all(sim.state_of(name, o) == "dead" for o in sim.live_names()):
            return
    pytest.fail(f"{name} not dead everywhere after {timeout} s")


def leave_events(sim: Simulation, about: str, since: float) -> set[str]:
    return {
        r.observer
        for r in sim.records
        if isinstance(r.event, MemberEvent)
        and r.event.node == about
        and r.event.kind == "member-leave"
        and r.time >= since
    }


def test_a_dead_member_moves_to_left_everywhere(chatter_sim: SimFactory) -> None:
    sim = chatter_sim(N)
    sim.kill("n3")
    dead_everywhere(sim, "n3")
    t0 = sim.now
    result = sim.nodes["n0"].force.request("n3", False, sim.now)
    sim.step(sim.nodes["n0"])
    assert (result.before, result.left, result.pruned) == ("dead", True, False)
    sim.run_for(3)
    survivors = sim.live_names()
    assert all(sim.state_of("n3", o) == "left" for o in survivors)
    assert leave_events(sim, "n3", t0) == set(survivors)  # once on each node
    assert all("n3" not in sim.nodes[o].news.dead for o in survivors)  # no longer a reconnect candidate
    again = sim.nodes["n1"].force.request("n3", False, sim.now)  # idempotent: it has left already
    assert (again.before, again.left) == ("left", False)


def test_live_suspect_unknown_and_self_are_refused(chatter_sim: SimFactory) -> None:
    sim = chatter_sim(4)
    node = sim.nodes["n0"]
    with pytest.raises(ForceLeaveError, match="n2 is alive: a live member cannot be force-left") as e:
        node.force.request("n2", False, sim.now)
    assert e.value.reason == "live"
    with pytest.raises(ForceLeaveError, match="no member 'zz'") as e:
        node.force.request("zz", True, sim.now)
    assert e.value.reason == "unknown"
    with pytest.raises(ForceLeaveError, match="this node"):
        node.force.request("n0", False, sim.now)
    sim.kill("n1")
    for _ in range(200):  # until n0 suspects n1 (before it declares it dead)
        sim.run_for(0.05)
        if sim.state_of("n1", "n0") == "suspect":
            break
    assert sim.state_of("n1", "n0") == "suspect"
    with pytest.raises(ForceLeaveError, match="n1 is suspect"):
        node.force.request("n1", False, sim.now)
    assert sim.state_of("n1", "n0") == "suspect"  # nothing changed


def test_prune_erases_everywhere_and_it_stays_erased(chatter_sim: SimFactory) -> None:
    sim = chatter_sim(N)
    sim.kill("n3")
    dead_everywhere(sim, "n3")
    # n7 misses the prune: nothing reaches it while the gossip lasts.
    for other in sim.live_names():
        sim.block(other, "n7")
    result = sim.nodes["n0"].force.request("n3", True, sim.now)
    sim.step(sim.nodes["n0"])
    assert result.pruned
    sim.run_for(2)
    others = [o for o in sim.live_names() if o != "n7"]
    assert all(sim.nodes[o].table.get("n3") is None for o in others)
    assert sim.nodes["n7"].table.get("n3") is not None
    sim.heal()
    # Push-pull (every ~30 s) brings n7's record of n3 to the others: they drop it and tell n7.
    for _ in range(40):
        sim.run_for(5)
        if sim.nodes["n7"].table.get("n3") is None:
            break
    survivors = sim.live_names()
    assert all(sim.nodes[o].table.get("n3") is None for o in survivors), [
        o for o in survivors if sim.nodes[o].table.get("n3") is not None
    ]
    assert sum(sim.nodes[o].stats["pruned_ignored"] for o in survivors) >= 1
    sim.run_for(120)  # several more exchanges: nobody brings it back
    assert all(sim.nodes[o].table.get("n3") is None for o in survivors)
    assert all(sim.state_of(o, "n0") == "alive" for o in survivors)


def test_a_pruned_member_that_restarts_comes_back(chatter_sim: SimFactory) -> None:
    sim = chatter_sim(5)
    sim.kill("n4")
    dead_everywhere(sim, "n4")
    sim.nodes["n0"].force.request("n4", True, sim.now)
    sim.step(sim.nodes["n0"])
    sim.run_for(2)
    assert all(sim.nodes[o].table.get("n4") is None for o in sim.live_names())
    sim.restart("n4", join=["n1"])
    sim.run_for(5)
    assert all(sim.state_of("n4", o) == "alive" for o in sim.live_names())


def test_a_forged_prune_is_dropped_and_a_prune_of_a_live_member_is_refuted(chatter_sim: SimFactory) -> None:
    sim = chatter_sim(4)
    sim.kill("n3")
    dead_everywhere(sim, "n3")
    inc3 = sim.nodes["n0"].table.members["n3"].inc
    forged = wire.encode([wire.Left(node="n3", inc=inc3, prune=True)], "n9")
    sim.send_raw(forged, ("10.6.6.6", 666), "n0")  # not a member's address
    sim.run_for(1)
    assert sim.state_of("n3", "n0") == "dead"
    assert sim.nodes["n0"].stats["malformed_prune_stranger"] == 1
    # A member that sends a prune of a live member: applied as a leave, which it refutes.
    inc2 = sim.nodes["n0"].table.members["n2"].inc
    prune_live = wire.encode([wire.Left(node="n2", inc=inc2, prune=True)], "n1")
    sim.send_raw(prune_live, sim.addr_of["n1"], "n0")
    sim.run_for(3)
    assert sim.nodes["n0"].table.get("n2") is not None
    assert all(sim.state_of("n2", o) == "alive" for o in sim.live_names())
    assert sim.nodes["n2"].stats["refutations"] >= 1


def test_in_a_sealed_cluster_only_sealed_prunes_count() -> None:
    """A prune forged from a member's own address, but not sealed with the cluster's key, is
    refused before it is read; the operator's prune, sealed by the node, erases everywhere."""
    sim = Simulation(seed=7, keys=[bytes(range(32))])
    sim.start_cluster(4)
    sim.kill("n3")
    dead_everywhere(sim, "n3")
    inc3 = sim.nodes["n0"].table.members["n3"].inc
    forged = wire.encode([wire.Left(node="n3", inc=inc3, prune=True)], "n1")
    refused = sim.nodes["n0"].stats["plaintext_refused"]
    sim.send_raw(forged, sim.addr_of["n1"], "n0")  # spoofed source: a live member's
    sim.run_for(1)
    assert sim.nodes["n0"].stats["plaintext_refused"] == refused + 1
    assert sim.state_of("n3", "n0") == "dead"
    sim.nodes["n1"].force.request("n3", True, sim.now)
    sim.step(sim.nodes["n1"])
    sim.run_for(3)
    assert all(sim.nodes[o].table.get("n3") is None for o in sim.live_names())
