"""Roles in virtual time: election, failover, fencing epochs, partitions, quorum, checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from chatterd import views
from chatterd.core.events import RoleEvent
from chatterd.core.roles import Claim, elect, parse_role, role_tags
from chatterd.sim import Simulation

ROLE = "primary"


def cluster(prios: dict[str, int], seed: int = 1, loss: float = 0.0, **node_kw: Any) -> Simulation:
    """Nodes named after their keys, each a candidate for ROLE at the given priority
    (None: not a candidate), all joining through the first."""
    sim = Simulation(seed=seed, loss=loss)
    names = list(prios)
    for i, name in enumerate(names):
        tags = role_tags({ROLE: prios[name]}) if prios[name] is not None else {}
        sim.add_node(name, join=[names[0]] if i else None, tags=tags, **node_kw)
    sim.run_for(5)
    return sim


def role_events(sim: Simulation, kind: str | None = None) -> list[tuple[float, str, RoleEvent]]:
    return [
        (r.time, r.observer, r.event)
        for r in sim.records
        if isinstance(r.event, RoleEvent) and (kind is None or r.event.kind == kind)
    ]


def agreed_claim(sim: Simulation) -> Claim:
    claims = {n.roles.claims.get(ROLE) for name, n in sim.nodes.items() if name not in sim.down}
    assert len(claims) == 1, claims
    claim = claims.pop()
    assert claim is not None
    return claim


def test_election_rule() -> None:
    assert elect({"a": 1, "b": 2}, None) == "b"
    assert elect({"a": 1, "b": 1}, None) == "b"  # tie: highest name
    held_by_a = Claim(role="r", holder="a", epoch=3, ts=0)
    assert elect({"a": 1, "b": 1}, held_by_a) == "a"  # equal priority: the holder keeps it
    assert elect({"a": 1, "b": 2}, held_by_a) == "b"  # strictly higher priority takes over
    assert elect({"b": 1}, held_by_a) == "b"  # holder gone
    assert elect({}, held_by_a) is None
    assert parse_role("db:10") == ("db", 10) and parse_role("db") == ("db", 0)
    with pytest.raises(ValueError):
        parse_role("db:high")


def test_one_holder_everyone_agrees_on() -> None:
    sim = cluster({"a": 1, "b": 5, "c": 3, "d": None})
    assert sim.holders(ROLE) == {"b": 1}
    claim = agreed_claim(sim)
    assert (claim.holder, claim.epoch) == ("b", 1)
    assert [(o, e.kind) for _, o, e in role_events(sim)] == [("b", "role-acquired")]


def test_kill_moves_the_role_to_the_next_candidate_with_a_higher_epoch() -> None:
    sim = cluster({"a": 1, "b": 5, "c": 3, "d": None})
    sim.kill("b")
    t0 = sim.now
    sim.run_for(6)
    assert sim.holders(ROLE) == {"c": 2}
    ((t, _, ev),) = [x for x in role_events(sim, "role-acquired") if x[1] == "c"]
    assert ev.epoch == 2
    cfg = sim.config
    assert t - t0 <= cfg.suspect_after + cfg.suspicion_max + cfg.heartbeat_interval + 0.1
    assert agreed_claim(sim).epoch == 2


def test_graceful_leave_hands_over_at_once() -> None:
    sim = cluster({"a": 1, "b": 5, "c": 3})
    t0 = sim.now
    sim.leave("b")
    sim.run_for(1)
    lost = [(o, e.reason) for _, o, e in role_events(sim, "role-lost")]
    assert lost == [("b", "leaving the cluster")]
    ((t, _, ev),) = [x for x in role_events(sim, "role-acquired") if x[1] == "c"]
    assert t - t0 < 0.05 and ev.epoch == 2


def test_equal_priorities_do_not_fail_back_when_the_old_holder_returns() -> None:
    sim = cluster({"a": 1, "b": 1, "c": 1})
    assert sim.holders(ROLE) == {"c": 1}
    sim.kill("c")
    sim.run_for(6)
    assert sim.holders(ROLE) == {"b": 2}
    sim.restart("c", join=["a"], tags=role_tags({ROLE: 1}))
    sim.run_for(6)
    assert sim.holders(ROLE) == {"b": 2}  # the restarted node came back as a standby
    assert agreed_claim(sim).holder == "b"


def test_higher_priority_returning_takes_over_with_a_new_epoch() -> None:
    sim = cluster({"a": 1, "b": 9, "c": 1})
    sim.kill("b")
    sim.run_for(6)
    assert sim.holders(ROLE) == {"c": 2}
    sim.restart("b", join=["a"], tags=role_tags({ROLE: 9}))
    t0 = sim.now
    overlap = 0.0
    for _ in range(300):
        sim.run_for(0.01)
        if len(sim.holders(ROLE)) > 1:
            overlap += 0.01
    assert sim.holders(ROLE) == {"b": 3}  # it learned epoch 2 before claiming
    assert overlap <= 0.05  # the two tenures touch only while the news is in flight
    lost = [(o, e.reason) for t, o, e in role_events(sim, "role-lost") if t >= t0]
    assert lost == [("c", "b wins the election")]


def test_epochs_only_grow_over_many_failovers_and_restarts() -> None:
    sim = cluster({"a": 1, "b": 1, "c": 1, "d": 1}, loss=0.05)
    for victim_round in range(6):
        (holder,) = sim.holders(ROLE)
        sim.kill(holder)
        sim.run_for(6)
        sim.restart(holder, join=[n for n in sim.nodes if n != holder][:1], tags=role_tags({ROLE: 1}))
        sim.run_for(4)
        assert len(sim.holders(ROLE)) == 1, victim_round
    acquired = [e.epoch for _, _, e in role_events(sim, "role-acquired")]
    assert acquired == sorted(acquired) and len(set(acquired)) == len(acquired) == 7
    assert agreed_claim(sim).epoch == 7


def test_partition_default_available_both_sides_then_higher_epoch_wins() -> None:
    sim = cluster({"a": 1, "b": 1, "c": 1, "d": 1, "e": 1})
    assert sim.holders(ROLE) == {"e": 1}
    sim.partition(["a", "b", "c"], ["d", "e"])
    sim.run_for(10)
    assert sim.holders(ROLE) == {"c": 2, "e": 1}  # available: the majority side elected its own
    sim.heal()
    # Within one reconnect interval (30 s, drawn in 0.75-1.25 of it) some node tries the other
    # side; 15 s was enough for most seeds only (each node draws its phase).
    sim.run_for(40)
    assert sim.holders(ROLE) == {"c": 2}  # the higher epoch won
    assert [(o, e.epoch) for _, o, e in role_events(sim, "role-lost")] == [("e", 1)]
    assert agreed_claim(sim).holder == "c"


def test_expect_keeps_a_minority_without_a_holder() -> None:
    sim = cluster({"a": 1, "b": 1, "c": 1, "d": 1, "e": 1}, expect=5)
    assert sim.holders(ROLE) == {"e": 1}
    sim.partition(["a", "b", "c"], ["d", "e"])
    sim.run_for(10)
    assert sim.holders(ROLE) == {"c": 2}  # the minority's holder stepped down, the majority elected
    lost = [(o, e.reason) for _, o, e in role_events(sim, "role-lost")]
    assert lost == [("e", "lost quorum: 2 of 5 members alive")]
    assert "no quorum" in str(sim.nodes["d"].roles.why_not.get(ROLE))
    sim.heal()
    sim.run_for(15)
    assert sim.holders(ROLE) == {"c": 2}
    assert agreed_claim(sim).holder == "c"


@pytest.mark.parametrize("minority", [["a", "b"], ["d", "e"]])
def test_expect_never_lets_two_sides_hold_at_once(minority: list[str]) -> None:
    sim = cluster({"a": 1, "b": 1, "c": 1, "d": 1, "e": 1}, expect=5)
    assert sim.holders(ROLE) == {"e": 1}
    sim.partition(minority, [n for n in "abcde" if n not in minority])
    for _ in range(1000):
        sim.run_for(0.01)
        assert len(sim.holders(ROLE)) <= 1
    assert len(sim.holders(ROLE)) == 1 and set(sim.holders(ROLE)) - set(minority)
    sim.heal()
    for _ in range(1500):
        sim.run_for(0.01)
        assert len(sim.holders(ROLE)) <= 1
    assert len(sim.holders(ROLE)) == 1


def test_failing_check_gives_the_role_away_and_it_stays_away() -> None:
    sim = cluster({"a": 1, "b": 1, "c": 1})
    sim.set_failing("c", "exit status 1")
    sim.run_for(1)
    assert sim.holders(ROLE) == {"b": 2}
    lost = [(o, e.reason) for _, o, e in role_events(sim, "role-lost")]
    assert lost == [("c", "check failing: exit status 1")]
    assert sim.nodes["a"].table.members["c"].tags == {"check": "failing"}
    sim.set_failing("c", None)
    sim.run_for(2)
    assert sim.holders(ROLE) == {"b": 2}
    assert sim.nodes["a"].table.members["c"].tags == role_tags({ROLE: 1})


def test_a_short_stall_of_the_holder_moves_nothing() -> None:
    sim = cluster({"a": 1, "b": 1, "c": 1})
    sim.pause("c")
    sim.run_for(1.0)
    sim.resume("c")
    sim.run_for(5)
    assert sim.holders(ROLE) == {"c": 1}
    assert len(role_events(sim)) == 1


def test_a_long_stall_moves_the_role_and_the_stalled_holder_steps_down_on_waking() -> None:
    sim = cluster({"a": 1, "b": 1, "c": 1})
    sim.pause("c")
    sim.run_for(8)
    sim.resume("c")
    sim.run_for(5)
    assert sim.holders(ROLE) == {"b": 2}
    lost = [(o, e.reason) for _, o, e in role_events(sim, "role-lost")]
    assert lost == [("c", "superseded by b at epoch 2")]


def test_lock_gated_node_asks_the_shell_and_claims_with_the_lock_epoch() -> None:
    sim = cluster({"a": 1, "b": 1}, role_lock=True)
    b = sim.nodes["b"]
    assert sim.holders(ROLE) == {}
    assert b.take_lock_requests() == [("want", ROLE)]
    assert sim.nodes["a"].take_lock_requests() == []
    assert b.grant_role(ROLE, 4711, sim.now)
    sim.step(b)
    sim.run_for(1)
    assert sim.holders(ROLE) == {"b": 4711}
    assert agreed_claim(sim).epoch == 4711
    b.revoke_role(ROLE, "lease expired", sim.now)
    sim.step(b)
    assert sim.holders(ROLE) == {}
    assert [(o, e.reason) for _, o, e in role_events(sim, "role-lost")] == [("b", "lease expired")]
    sim.run_for(0.5)
    assert b.take_lock_requests() == [("want", ROLE)]  # still elected: it asks again


class OneKeyLock:
    """The lock service of ``--lock`` as the nodes see it (etcd on a host every node reaches): one
    key per role, taken by the first node that wants it while it is free, at a growing revision."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.owner: str | None = None
        self.revision = 10
        self.wanting: set[str] = set()
        self.log: list[tuple[float, str, str]] = []  # (time, "granted" | "freed", node)

    def serve(self) -> None:
        for name, node in self.sim.nodes.items():
            for action, _role in node.take_lock_requests():
                if action == "want":
                    self.wanting.add(name)
                    continue
                self.wanting.discard(name)
                if self.owner == name:
                    self.owner = None
                    self.log.append((self.sim.now, "freed", name))
        if self.owner is None and self.wanting:
            name = min(self.wanting)
            self.revision += 1
            self.owner = name
            self.wanting.discard(name)
            self.log.append((self.sim.now, "granted", name))
            self.sim.nodes[name].grant_role(ROLE, self.revision, self.sim.now)
            self.sim.step(self.sim.nodes[name])

    def run_for(self, seconds: float) -> None:
        """Run the cluster in 10 ms steps, serving the lock; at every step a holder owns the key."""
        for _ in range(round(seconds / 0.01)):
            self.sim.run_for(0.01)
            self.serve()
            assert set(self.sim.holders(ROLE)) <= {self.owner}, (self.sim.holders(ROLE), self.owner)


def test_a_lock_holder_cut_off_from_its_majority_frees_the_lock_for_the_majority() -> None:
    """--lock with --expect 3, the holder cut off from its peers but not from the lock (issue #12):
    it steps down (lost quorum) and frees its key at once, so a majority node takes it over."""
    sim = Simulation(seed=3)
    for name in "abc":
        sim.add_node(name, join=None if name == "a" else ["a"], tags=role_tags({ROLE: 1}), expect=3, role_lock=True)
    lock = OneKeyLock(sim)
    lock.run_for(5)
    [(old, epoch)] = sim.holders(ROLE).items()
    sim.partition([old], [n for n in "abc" if n != old])
    cut = sim.now
    lock.run_for(10)
    [(new, new_epoch)] = sim.holders(ROLE).items()
    assert new != old and new_epoch > epoch
    assert [(o, e.reason) for _, o, e in role_events(sim, "role-lost")] == [(old, "lost quorum: 1 of 3 members alive")]
    freed, granted = [(t - cut, what, n) for t, what, n in lock.log if t > cut]
    assert freed[1:] == ("freed", old) and granted[1:] == ("granted", new)
    cfg = sim.nodes[old].cfg
    # It steps down by suspect_after after the cut (Election.members_up) and frees the key in
    # the same turn; the majority elects (and gets the key) once it declared the holder dead.
    assert freed[0] <= cfg.suspect_after < granted[0] < cfg.suspect_after + cfg.suspicion_min + 2.0, (freed, granted)
    sim.heal()
    lock.run_for(15)
    assert sim.holders(ROLE) == {new: new_epoch} and lock.owner == new


def test_a_late_joiner_learns_the_current_claim_by_state() -> None:
    sim = cluster({"a": 1, "b": 5})
    sim.add_node("z", join=["a"])
    sim.run_for(2)
    assert sim.nodes["z"].roles.claims[ROLE].holder == "b"
    rows = views.role_rows(sim.nodes["z"], sim.now)
    assert rows[0]["holder"] == "b" and rows[0]["epoch"] == 1 and rows[0]["candidates"] == {"b": 5, "a": 1}


@pytest.mark.parametrize("seed", range(1, 11))
def test_expect_with_members_a_minority_does_not_monitor(seed: int) -> None:
    """9 nodes cut 4 | 5 with the holder among the 4: the minority keeps some majority members
    "alive" in its gossip view for a while (nobody there monitors them), so its quorum counts
    answers, not gossip: the holder steps down before the majority elects another."""
    names = [f"n{i}" for i in range(9)]
    sim = cluster(dict.fromkeys(names, 1), seed=seed, expect=9)
    (holder,) = sim.holders(ROLE)
    minority = [holder, *[n for n in names if n != holder][:3]]
    sim.partition(minority, [n for n in names if n not in minority])
    for _ in range(2000):
        sim.run_for(0.01)
        assert len(sim.holders(ROLE)) <= 1
    (new,) = sim.holders(ROLE)
    assert new not in minority


def test_holds_from_several_sources_and_for_one_role() -> None:
    """--check and --run (node-wide) and an application's lease (one role) each withhold
    candidacies; a role comes back only when nothing holds it any more."""
    sim = Simulation(seed=12)
    sim.add_node("a", tags=role_tags({"db": 1, "web": 1}))
    sim.add_node("c", join=["a"], tags=role_tags({"db": 2, "web": 2}))
    sim.run_for(5)
    assert sim.holders("db") == {"c": 1} and sim.holders("web") == {"c": 1}
    c = sim.nodes["c"]

    def step(action: Callable[[], None]) -> None:
        action()
        sim.step(c)
        sim.run_for(3)

    step(lambda: c.hold_role("db", "lease expired", sim.now))
    assert set(sim.holders("db")) == {"a"} and set(sim.holders("web")) == {"c"}
    step(lambda: c.set_failing("application exited", sim.now, source="app"))
    assert set(sim.holders("web")) == {"a"} and c.failing == "app failing: application exited"
    step(lambda: c.set_failing(None, sim.now, source="check"))  # another source passing changes nothing
    assert set(sim.holders("web")) == {"a"}
    step(lambda: c.set_failing(None, sim.now, source="app"))
    assert set(sim.holders("web")) == {"c"} and set(sim.holders("db")) == {"a"} and c.failing is None
    step(lambda: c.hold_role("db", None, sim.now))
    assert set(sim.holders("db")) == {"c"}
