"""Sealed gossip in virtual time: an encrypted cluster behaves like a plaintext one, and an
attacker without the key (forging, or replaying what it captured) changes nothing."""

from __future__ import annotations

from chatterd.core import wire
from chatterd.core.events import Delivery, MemberEvent, RoleEvent
from chatterd.core.roles import role_tags
from chatterd.sim import Simulation

KEY = bytes(range(32))
OTHER = bytes(range(100, 132))


def sealed_cluster(n: int, seed: int = 3, **kw: object) -> Simulation:
    sim = Simulation(seed=seed, keys=[KEY], **kw)  # type: ignore[arg-type]
    sim.start_cluster(n)
    return sim


def counter(sim: Simulation, name: str) -> int:
    return sum(node.stats[name] for node in sim.nodes.values())


def test_an_encrypted_cluster_forms_delivers_and_detects_like_a_plaintext_one() -> None:
    outcomes = []
    for keys in (None, [KEY]):
        sim = Simulation(seed=5, keys=keys, loss=0.01)
        names = sim.start_cluster(10)
        assert all(len([m for m in sim.nodes[n].table.members.values() if m.state == "alive"]) == 10 for n in names)
        mid = sim.inject("n2", {"hello": {"n": 1}})
        sim.run_for(1)
        assert set(sim.deliveries(mid)) == set(names)
        sim.kill("n4")
        t0 = sim.now
        sim.run_for(6)
        dead_at = [r.time - t0 for r in sim.member_events("member-failed", node="n4")]
        assert len(dead_at) == 9
        outcomes.append(max(dead_at))
        assert counter(sim, "decrypt_failed") == counter(sim, "replayed") == 0
        if keys:
            assert sim.largest <= sim.config.max_datagram  # the seal fits in the same datagram size
    plain, sealed = outcomes
    assert sealed < plain + 1.0 and sealed < 5.0


def test_a_node_with_another_key_or_label_or_none_cannot_join() -> None:
    sim = sealed_cluster(3)
    sim.add_node("wrong-key", join=["n0"], keys=[OTHER])
    sim.add_node("wrong-label", join=["n0"], label="other-cluster")
    sim.add_node("plain", join=["n0"], keys=[])
    sim.run_for(5)
    for n in ("n0", "n1", "n2"):
        assert set(sim.nodes[n].table.members) == {"n0", "n1", "n2"}
    for n in ("wrong-key", "wrong-label", "plain"):
        assert set(sim.nodes[n].table.members) == {n}
    assert sim.nodes["n0"].stats["decrypt_failed_unknown_key"] > 0
    assert sim.nodes["n0"].stats["decrypt_failed_auth"] > 0  # the label is associated data
    assert sim.nodes["n0"].stats["plaintext_refused"] > 0
    sealer = sim.sealer()
    assert sealer is not None
    sim.send_raw(sealer.seal(wire.encode([wire.Heartbeat(inc=1)], "n0")), sim.addr_of["n0"], "plain")
    sim.run_for(0.1)
    assert sim.nodes["plain"].stats["malformed_version"] == 1  # a plaintext node: unsupported version


def test_replayed_datagrams_do_not_revive_a_dead_node_nor_move_a_role() -> None:
    sim = Simulation(seed=11, keys=[KEY])
    sim.wiretap = []
    sim.add_node("n0", tags=role_tags({"sender": 2}))
    for i in range(1, 5):
        sim.add_node(f"n{i}", join=["n0"], tags=role_tags({"sender": 1}))
    sim.run_for(5)
    mid = sim.inject("n0", {"deploy": {"v": 1}})
    sim.run_for(1)
    assert set(sim.holders("sender")) == {"n0"}
    captured = [(data, sim.addr_of[src], sim.name_at.get(addr)) for src, data, addr in sim.wiretap if src == "n0"]
    assert len(captured) > 50
    sim.kill("n0")
    sim.run_for(6)
    new_holder = set(sim.holders("sender"))
    assert len(new_holder) == 1 and "n0" not in new_holder
    assert all(sim.state_of("n0", seen_by=n) == "dead" for n in sim.live_names())
    before = len(sim.records)
    sim.wiretap = None
    for data, src, dest in captured:  # the attacker replays all it saw n0 send, twice
        if dest is not None and dest != "n0":
            sim.send_raw(data, src, dest)
            sim.send_raw(data, src, dest)
    sim.run_for(6)
    assert all(sim.state_of("n0", seen_by=n) == "dead" for n in sim.live_names())
    assert set(sim.holders("sender")) == new_holder
    late = [r.event for r in sim.records[before:]]
    assert not [e for e in late if isinstance(e, (Delivery, RoleEvent))]
    assert not [e for e in late if isinstance(e, MemberEvent) and e.node == "n0"]
    assert len(sim.deliveries(mid)) == 5
    assert counter(sim, "replayed") >= len(captured)


def test_forged_datagrams_change_nothing_and_are_counted() -> None:
    sim = sealed_cluster(4)
    before = len(sim.records)
    news: list[wire.Message] = [
        wire.Dead(node="n1", inc=2**40, by="x"),
        wire.Alive(node="g", id="g", addr="s:9", inc=1),
    ]
    forged = wire.encode(news, "x")
    sealed_other = sim.sealer([OTHER])
    assert sealed_other is not None
    for dest in ("n0", "n2", "n3"):
        sim.send_raw(forged, ("sim", 99), dest)  # plaintext
        sim.send_raw(sealed_other.seal(forged), ("sim", 99), dest)  # the wrong key
        sim.send_raw(b"\x02" + bytes(60), ("sim", 99), dest)  # a header, garbage
        sim.send_raw(b"\x02" + sim.nodes["n1"].sealer.keyring.primary_id + bytes(60), ("sim", 99), dest)  # type: ignore[union-attr]
    sim.run_for(3)
    assert not [r for r in sim.records[before:] if isinstance(r.event, MemberEvent)]
    assert all(sim.state_of("n1", seen_by=n) == "alive" for n in ("n0", "n2", "n3"))
    assert counter(sim, "plaintext_refused") == 3
    assert counter(sim, "decrypt_failed") == 9
