"""`chatterd keys` in virtual time: cluster-wide list / install / use / remove over queries,
with answer counts; a rotation with a member down (serf#579): the removal of the old key is
refused until the member is back (it rejoins with the old key) and has taken the new one."""

from __future__ import annotations

import pytest

from chatterd.core import wire
from chatterd.core.events import KeysResult, MemberEvent
from chatterd.core.keyring import KeyringError, encode_key, key_id
from chatterd.core.keys import KEY_TAG, KEYS_QUERY
from chatterd.core.query import QueryError
from chatterd.sim import Simulation

K1 = bytes(range(32))
K2 = bytes(range(50, 82))
B1, B2 = encode_key(K1), encode_key(K2)


def keys(sim: Simulation, name: str, op: str, key: str | None = None, force: bool = False) -> KeysResult:
    node = sim.nodes[name]
    rid = node.keys_request(op, key, sim.now, force=force)
    sim.step(node)
    for _ in range(200):
        for r in sim.records:
            if isinstance(r.event, KeysResult) and r.event.id == rid:
                return r.event
        sim.run_for(0.05)
    raise AssertionError(f"no result for keys {op}")


def failures(sim: Simulation, since: float = 0.0) -> list[MemberEvent]:
    return [r.event for r in sim.member_events("member-failed") if r.time >= since]


def test_list_install_use_remove_reach_every_member_with_counts() -> None:
    sim = Simulation(seed=1, keys=[K1])
    names = sim.start_cluster(6)
    r = keys(sim, "n2", "list")
    assert (r.asked, r.answered, r.keys, r.primary, r.errors) == (names, names, {B1: 6}, {B1: 6}, {})
    r = keys(sim, "n0", "install", B2)
    assert r.keys == {B1: 6, B2: 6} and r.primary == {B1: 6} and not r.missing
    r = keys(sim, "n5", "use", B2)
    assert r.primary == {B2: 6}
    sim.run_for(1)  # the new key tags spread
    for node in sim.nodes.values():
        assert node.keyring is not None and node.keyring.primary == K2
        assert {m.tags[KEY_TAG] for m in node.table.members.values()} == {key_id(K2).hex()}
    r = keys(sim, "n3", "remove", B1)
    assert not r.refused and r.keys == {B2: 6}
    assert all(node.keyring is not None and node.keyring.keys == [K2] for node in sim.nodes.values())
    assert not failures(sim)
    sim.run_for(5)
    assert not failures(sim)  # and the cluster keeps working under the new key
    mid = sim.inject("n1", {"after": {"rotation": True}})
    sim.run_for(1)
    assert set(sim.deliveries(mid)) == set(names)


def test_errors_are_counted_per_member_and_the_primary_is_never_removed() -> None:
    sim = Simulation(seed=2, keys=[K1])
    sim.start_cluster(4)
    r = keys(sim, "n1", "use", B2)  # not installed anywhere
    assert set(r.errors) == {"n0", "n1", "n2", "n3"} and "not installed" in r.errors["n0"]
    assert r.primary == {B1: 4}
    with pytest.raises(KeyringError, match="primary"):
        sim.nodes["n0"].keys_request("remove", B1, sim.now)
    with pytest.raises(KeyringError, match="base64"):
        sim.nodes["n0"].keys_request("install", "not a key", sim.now)
    plain = Simulation(seed=2)
    plain.start_cluster(2)
    with pytest.raises(KeyringError, match="encryption is off"):
        plain.nodes["n0"].keys_request("list", None, plain.now)


def test_remove_is_refused_while_a_live_member_still_seals_with_the_key() -> None:
    sim = Simulation(seed=3, keys=[K1, K2])
    sim.start_cluster(4)
    ring = sim.nodes["n2"].keyring
    assert ring is not None
    ring.use(K2)  # n2 alone seals with K2 (as after a `use` it alone received)
    r = keys(sim, "n0", "remove", B2)
    assert "n2 (alive)" in r.refused and r.keys == {B1: 4, B2: 4}
    assert all(n.keyring is not None and K2 in n.keyring for n in sim.nodes.values())  # nothing changed


def test_a_member_down_during_a_rotation_rejoins_and_then_the_old_key_goes() -> None:
    """serf#579: n4 is down while K2 is installed and put in use."""
    sim = Simulation(seed=4, keys=[K1])
    names = sim.start_cluster(5)
    sim.kill("n4")
    sim.run_for(8)
    assert len(failures(sim)) == 4
    r = keys(sim, "n0", "install", B2)
    assert r.asked == names[:4] and r.keys == {B1: 4, B2: 4}
    assert keys(sim, "n1", "use", B2).primary == {B2: 4}
    sim.run_for(1)
    r = keys(sim, "n2", "remove", B1)
    assert "n4 (failed)" in r.refused
    assert all(sim.nodes[n].keyring is not None and K1 in sim.nodes[n].keyring for n in names[:4])  # type: ignore[operator]

    back = sim.now
    sim.restart("n4", join=["n0"], keys=[K1])  # its keyring as it was: the old key only
    sim.run_for(6)
    for n in names:
        assert sim.nodes[n].table.members["n4"].state == "alive"
        assert all(m.state == "alive" for m in sim.nodes[n].table.members.values())
    assert not failures(sim, since=back)
    assert not sim.member_events("member-suspect", node="n0")  # n4 understands everyone

    assert keys(sim, "n0", "install", B2).keys == {B1: 5, B2: 5}
    assert keys(sim, "n0", "use", B2).primary == {B2: 5}
    sim.run_for(1)
    r = keys(sim, "n3", "remove", B1)
    assert not r.refused and r.keys == {B2: 5} and r.answered == names
    sim.run_for(5)
    assert not failures(sim, since=back)


def test_force_removes_the_key_a_failed_member_used() -> None:
    sim = Simulation(seed=5, keys=[K1, K2])
    sim.start_cluster(4)
    sim.kill("n3")
    sim.run_for(8)
    keys(sim, "n0", "use", B2)
    sim.run_for(1)
    assert keys(sim, "n0", "remove", B1).refused
    r = keys(sim, "n0", "remove", B1, force=True)
    assert not r.refused and r.keys == {B2: 3}


def test_answers_survive_loss_through_the_second_ask() -> None:
    for seed in (1, 2, 3):
        sim = Simulation(seed=seed, keys=[K1], loss=0.10)
        names = sim.start_cluster(20, settle=8)
        r = keys(sim, "n7", "list")
        assert set(r.answered) == set(names), (seed, r.missing)


def test_keyring_queries_in_plaintext_are_neither_answered_nor_passed_on() -> None:
    """During a rolling move (plaintext still accepted) a forged `keys use` changes nothing."""
    sim = Simulation(seed=6, keys=[K1])
    for i in range(3):
        sim.add_node(f"n{i}", join=["n0"] if i else None, incoming=False)
    sim.run_for(5)
    forged = wire.Query(
        id="f" * 32,
        origin="n0",
        name=KEYS_QUERY,
        ts=sim.nodes["n1"].local.wall_ms(sim.now),
        timeout=3000,
        payload={"op": "install", "key": B2},
    )
    sim.send_raw(wire.encode([forged], "n0"), sim.addr_of["n0"], "n1")
    sim.run_for(1)
    assert all(n.keyring is not None and n.keyring.keys == [K1] for n in sim.nodes.values())
    assert sim.nodes["n1"].stats["query_dropped_plaintext"] == 1


def test_answers_from_elsewhere_late_or_twice_are_dropped_and_bounded() -> None:
    sim = Simulation(seed=7, keys=[K1])
    sim.start_cluster(3)
    node = sim.nodes["n0"]
    with pytest.raises(QueryError, match="timeout"):
        node.keys_request("list", None, sim.now, timeout=3600)
    sealer = sim.sealer()
    assert sealer is not None
    stray = wire.encode([wire.Answer(id="x" * 32, node="n1", payload={"keys": [B1]})], "n1")
    sim.send_raw(sealer.seal(stray), sim.addr_of["n1"], "n0")
    sim.run_for(0.1)
    assert node.stats["answer_dropped_unexpected"] == 1
    for _ in range(16):
        node.keys_request("list", None, sim.now, timeout=1)
    with pytest.raises(QueryError, match="too many"):
        node.keys_request("list", None, sim.now)
    sim.run_for(2)
    assert not node.queries.pending  # all finished (answered by the 3 members)
