"""Member reaping in virtual time: a dead or left member stays in every table for reap_after
seconds (--reap-after), shown dead or left, and is forgotten within one reconnect round after."""

from __future__ import annotations

import pytest

from chatterd.core.config import LOCAL
from chatterd.sim import Simulation

REAP_AFTER = 20.0
CFG = LOCAL.replace(reap_after=REAP_AFTER)
# The reaping runs on the reconnect timer, which fires every 0.75-1.25 reconnect intervals.
ROUND = 1.25 * CFG.reconnect_interval


def known(sim: Simulation, name: str) -> dict[str, str | None]:
    """What each live node's table says of ``name`` (None: forgotten)."""
    return {o: sim.state_of(name, o) for o in sim.live_names()}


@pytest.mark.parametrize("seed", range(5, 10))
@pytest.mark.parametrize("how", ["kill", "leave"])
def test_a_member_is_forgotten_reap_after_its_death_or_leave(how: str, seed: int) -> None:
    """Each survivor reaps at its own time: one that has not yet must not hand the member back
    to one that has (as history, with a fresh since), which would keep it for another reap_after."""
    sim = Simulation(seed=seed, config=CFG)
    sim.start_cluster(6)
    getattr(sim, how)("n3")
    state = "dead" if how == "kill" else "left"
    for _ in range(100):  # until every survivor says so, in at most 10 s
        if set(known(sim, "n3").values()) == {state}:
            break
        sim.run_for(0.1)
    assert set(known(sim, "n3").values()) == {state}
    since = {o: sim.nodes[o].table.members["n3"].since for o in sim.live_names()}
    sim.run_until(min(since.values()) + REAP_AFTER - 0.1)
    assert set(known(sim, "n3").values()) == {state}  # still shown, for reap_after
    sim.run_until(max(since.values()) + REAP_AFTER + ROUND + 0.1)
    assert set(known(sim, "n3").values()) == {None}  # forgotten by every node
    assert {o: sim.nodes[o].stats["reaped"] for o in sim.live_names()} == dict.fromkeys(sim.live_names(), 1)
    sim.run_for(60)  # and not learned again from a peer's gossip or state
    assert set(known(sim, "n3").values()) == {None}
    for o in sim.live_names():
        assert sorted(sim.nodes[o].table.members) == ["n0", "n1", "n2", "n4", "n5"], o
