"""A member that comes back under its name at a new address (DHCP, a rescheduled pod) is
accepted there at its higher incarnation (memberlist#157), by every node, and stays alive."""

from __future__ import annotations

from chatterd.sim import Simulation


def test_a_member_back_at_a_new_address_is_known_there() -> None:
    sim = Simulation(seed=8)
    names = sim.start_cluster(6)
    old = sim.addr_of["n3"]
    sim.kill("n3")
    sim.run_for(1)  # not even declared dead yet: a quick reschedule
    new = ("sim", 99)
    sim.addr_of["n3"], sim.name_at[new] = new, "n3"
    sim.restart("n3", join=["n0"])
    sim.run_for(6)
    for n in names:
        m = sim.nodes[n].table.members["n3"]
        assert (m.addr, m.state) == (new, "alive"), n
    assert not sim.false_deaths(set(names) - {"n3"})
    assert sum(sim.nodes[n].stats["addr_changes"] for n in names) >= 1
    assert all(m.addr != old for n in names for m in sim.nodes[n].table.members.values())
