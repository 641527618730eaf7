"""Turning encryption on in a running plaintext cluster, one node at a time (serf#292,
memberlist's verify-outgoing / verify-incoming), in virtual time: three phases of graceful
restarts, with zero false failures and every inject delivered to every live node."""

from __future__ import annotations

from chatterd.core import wire
from chatterd.sim import Simulation

KEY = bytes(range(32))

# (outgoing, incoming) per phase: 1 the key, plaintext sent, both accepted; 2 sealed sent,
# both accepted; 3 sealed only (the default with a key).
PHASES = [(False, False), (True, False), (True, True)]


def restart_all(sim: Simulation, names: list[str], outgoing: bool, incoming: bool, mids: list[str]) -> None:
    for name in names:
        sim.leave(name)
        sim.run_for(0.5)
        others = [n for n in names if n != name]
        sim.restart(name, join=others[:2], keys=[KEY], outgoing=outgoing, incoming=incoming)
        sim.run_for(2.0)
        mids.append(sim.inject(others[0], {"during": {"node": name}}))
        sim.run_for(1.0)


def test_three_phases_move_a_plaintext_cluster_to_sealed_without_a_false_failure() -> None:
    sim = Simulation(seed=7, loss=0.01)
    names = sim.start_cluster(5)
    mids = [sim.inject("n0", {"before": {}})]
    sim.run_for(1.0)
    for outgoing, incoming in PHASES:
        restart_all(sim, names, outgoing, incoming, mids)
        sim.run_for(3.0)
        mids.append(sim.inject("n1", {"after_phase": {}}))
        sim.run_for(1.0)
    assert sim.false_deaths() == []
    assert len(mids) == 1 + 3 * 5 + 3
    for mid in mids:  # each injected while every node was up
        assert set(sim.deliveries(mid)) == set(names), mid
    for n in names:
        node = sim.nodes[n]
        assert sorted(m.name for m in node.table.members.values() if m.state == "alive") == sorted(names)
        assert node.sealer is not None and node.sealer.outgoing and node.sealer.incoming
    # At the end a plaintext datagram is refused by every node, and it changes nothing.
    for n in names:
        before = sim.nodes[n].stats["plaintext_refused"]
        sim.send_raw(wire.encode([wire.Heartbeat(inc=1)], "n0"), sim.addr_of["n0"], n)
        sim.run_for(0.1)
        assert sim.nodes[n].stats["plaintext_refused"] == before + 1


def test_in_phase_2_a_sealing_node_still_takes_plaintext_from_a_phase_1_node() -> None:
    sim = Simulation(seed=9)
    names = sim.start_cluster(3)
    restart_all(sim, names, False, False, [])
    sim.restart("n0", join=["n1"], keys=[KEY], outgoing=True, incoming=False)
    sim.run_for(3.0)
    mid = sim.inject("n1", {"from_phase_1": {}})  # n1 sends plaintext, n0 seals
    sim.run_for(1.0)
    assert set(sim.deliveries(mid)) == set(names)
    assert sim.nodes["n0"].stats["plaintext_accepted"] > 0
    assert sim.nodes["n1"].stats["plaintext_accepted"] > 0
    assert sim.false_deaths() == []
