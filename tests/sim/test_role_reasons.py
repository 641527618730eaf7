"""Why a node does not hold a role (GET /v1/roles' why_not_here), in virtual time: outbid,
same priority, not a candidate, a failing check, a lease run out, no quorum, balanced."""

from __future__ import annotations

from chatterd import views
from chatterd.core.balance import group_tags
from chatterd.core.roles import role_tags
from chatterd.sim import Simulation

ROLE = "primary"


def cluster(prios: dict[str, int | None], **node_kw: object) -> Simulation:
    sim = Simulation(seed=3)
    names = list(prios)
    for i, name in enumerate(names):
        prio = prios[name]
        tags = role_tags({ROLE: prio}) if prio is not None else {}
        sim.add_node(name, join=[names[0]] if i else None, tags=tags, **node_kw)  # type: ignore[arg-type]
    sim.run_for(5)
    return sim


def reasons(sim: Simulation, role: str = ROLE) -> dict[str, str | None]:
    """Each live node's why_not_here for ``role``."""
    out = {}
    for name, node in sim.nodes.items():
        if name not in sim.down:
            [row] = [r for r in views.role_rows(node, sim.now) if r["role"] == role]
            out[name] = row["why_not_here"]
    return out


def test_outbid_not_a_candidate_and_the_holder() -> None:
    sim = cluster({"a": 1, "b": 5, "c": None})
    assert sim.holders(ROLE) == {"b": 1}
    assert reasons(sim) == {
        "a": "held by b: priority 5, ours 1",
        "b": None,
        "c": "not a candidate: this node was not started with --role primary",
    }


def test_same_priority_the_holder_keeps_it() -> None:
    sim = cluster({"a": 1, "b": 1})
    [(holder, _)] = sim.holders(ROLE).items()
    other = "a" if holder == "b" else "b"
    assert reasons(sim)[other] == f"held by {holder}: same priority (1), the holder keeps it"


def test_a_failing_check_withdraws_the_candidacy() -> None:
    sim = cluster({"a": 1, "b": 5})
    sim.set_failing("b", "exit status 1")
    sim.run_for(3)
    assert sim.holders(ROLE) == {"a": 2}
    assert reasons(sim) == {"a": None, "b": "candidacy withdrawn: check failing: exit status 1"}
    sim.set_failing("b", None)
    sim.run_for(3)
    assert sim.holders(ROLE) == {"b": 3}
    assert reasons(sim) == {"a": "held by b: priority 5, ours 1", "b": None}


def test_a_lease_run_out_withdraws_that_role_alone() -> None:
    sim = cluster({"a": 1, "b": 5})
    b = sim.nodes["b"]
    b.hold_role(ROLE, "lease expired", sim.now)
    sim.step(b)
    sim.run_for(3)
    assert sim.holders(ROLE) == {"a": 2}
    assert reasons(sim)["b"] == "candidacy withdrawn: lease expired"


def test_no_quorum() -> None:
    sim = cluster({"a": 1, "b": 5}, expect=5)
    assert sim.holders(ROLE) == {}
    assert reasons(sim) == {"a": "no quorum: 2 of 5 members alive", "b": "no quorum: 2 of 5 members alive"}


def test_a_leaving_node_says_so() -> None:
    sim = cluster({"a": 1, "b": 5})
    sim.nodes["a"].leave(sim.now)
    assert reasons(sim)["a"] == "leaving the cluster"


def test_balanced_roles_say_they_are_spread() -> None:
    sim = Simulation(seed=3)
    for i, name in enumerate("ab"):
        sim.add_node(name, join=["a"] if i else None, tags=group_tags({"shard-0..3": 0}))
    sim.run_for(5)
    for role in ("shard-0", "shard-1", "shard-2", "shard-3"):
        [(holder, _)] = sim.holders(role).items()
        other = "a" if holder == "b" else "b"
        assert reasons(sim, role) == {
            holder: None,
            other: f"held by {holder} (balanced)",
        }
