"""The attacks that once worked against chatter (issue #10), replayed in virtual time in three
modes: ``plaintext`` (no key: the attacker sends what it likes), ``outsider`` (the cluster
is encrypted, the attacker has no key: plaintext and wrong-key datagrams) and ``insider``
(the attacker holds the key: it is trusted, but the bounds still hold). An outsider changes
nothing at all; in plaintext and as an insider, each attack is held to what the protocol
bounds: a node keeps its name, a phantom claim delays an election by a bounded time, a
stranger gets back no more bytes than it sent, clocks cannot be exhausted, a hijacked
address is refuted, a forged tombstone is overtaken by the device's next update."""

from __future__ import annotations

import pytest

from chatterd import views
from chatterd.core import wire
from chatterd.core.config import FIRST_SIGHT_MAX, LAMPORT_ADOPT_MAX, MAX_STATE_CHUNKS, PLAUSIBLE_STEP, WIRE_INT_MAX
from chatterd.core.events import MemberEvent, RoleEvent
from chatterd.core.roles import role_tags
from chatterd.core.seal import Sealer
from chatterd.sim import Simulation

KEY = bytes(range(32))
WRONG = bytes(range(100, 132))
FORGER = ("forger", 666)
MODES = ("plaintext", "outsider", "insider")
DEVICE = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"


class Attacker:
    def __init__(self, sim: Simulation, mode: str) -> None:
        self.sim, self.mode = sim, mode
        self.wrong = sim.sealer([WRONG])
        self.key: Sealer | None = sim.sealer([KEY]) if mode == "insider" else None
        self.sent = 0
        self.got_back = 0

    def send(self, dest: str, messages: list[wire.Message], sender: str | None = "n9", src: tuple = FORGER) -> None:
        body = wire.encode(messages, sender)
        if self.mode == "plaintext":
            datagrams = [body]
        elif self.mode == "outsider":
            assert self.wrong is not None
            datagrams = [body, self.wrong.seal(body)]
        else:
            assert self.key is not None
            datagrams = [self.key.seal(body)]
        node = self.sim.nodes[dest]
        for data in datagrams:
            self.sent += len(data)
            node.receive(data, src, self.sim.now)
            self.got_back += sum(len(d) for d, addr in node.fx._out if addr == src)
            node.fx._out = [(d, addr) for d, addr in node.fx._out if addr != src]  # sent to the attacker
        node.handle_timers(self.sim.now)
        self.sim.step(node)


def cluster(mode: str, n: int = 5, seed: int = 3, **kw: object) -> tuple[Simulation, list[str], Attacker]:
    sim = Simulation(seed=seed, keys=None if mode == "plaintext" else [KEY])
    names = sim.start_cluster(n, **kw)  # type: ignore[arg-type]
    return sim, names, Attacker(sim, mode)


def member_events_since(sim: Simulation, start: int) -> list[MemberEvent]:
    return [r.event for r in sim.records[start:] if isinstance(r.event, MemberEvent)]


@pytest.mark.parametrize("mode", MODES)
def test_forged_death_at_huge_incarnations_cannot_remove_a_node_for_good(mode: str) -> None:
    sim, names, attacker = cluster(mode)
    start, victim = len(sim.records), "n2"
    known = sim.nodes["n0"].table.members[victim].inc
    for inc in (WIRE_INT_MAX, known + PLAUSIBLE_STEP):
        for dest in names:
            attacker.send(dest, [wire.Dead(node=victim, inc=inc, by="n9"), wire.Left(node=victim, inc=inc)])
    sim.run_for(4)
    assert all(sim.state_of(victim, seen_by=n) == "alive" for n in names)
    assert sim.nodes[victim].inc <= WIRE_INT_MAX - 2**61  # it can always refute again
    if mode == "outsider":
        assert not member_events_since(sim, start) and sim.nodes[victim].inc == known


@pytest.mark.parametrize("mode", MODES)
def test_a_phantom_claim_delays_an_election_by_a_bounded_time(mode: str) -> None:
    sim = Simulation(seed=5, keys=None if mode == "plaintext" else [KEY])
    sim.add_node("a", tags=role_tags({"db": 1}))
    sim.add_node("b", join=["a"], tags=role_tags({"db": 2}))
    sim.run_for(5)
    attacker = Attacker(sim, mode)
    sim.kill("b")
    sim.run_for(0.5)
    attacker.send("a", [wire.RoleClaim(role="db", holder="ghost", epoch=7, ts=1)])
    t0 = sim.now
    sim.run_for(15)
    won = [r for r in sim.records if isinstance(r.event, RoleEvent) and r.event.kind == "role-acquired" and r.time > t0]
    assert [r.observer for r in won] == ["a"]
    assert won[0].time - t0 <= sim.config.suspect_after + sim.config.suspicion_max + sim.config.unknown_holder_hold
    assert won[0].event.epoch == (2 if mode == "outsider" else 8)  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", MODES)
def test_a_stranger_gets_back_at_most_the_bytes_it_sent(mode: str) -> None:
    """Until a join makes its address a member's; then each answer is bounded (32 chunks)."""
    sim, names, attacker = cluster(mode, n=12)
    for dest in names:
        attacker.send(dest, [wire.DigestMsg(h=[1] * 64), wire.Want(buckets=list(range(64)))], sender=None)
        attacker.send(dest, [wire.Join(node=f"x{i}", id=f"id{i}", addr="forger:666", inc=1) for i in range(3)], None)
    assert attacker.got_back <= attacker.sent
    if mode == "outsider":
        assert attacker.got_back == 0
        return
    attacker.sent = attacker.got_back = 0
    attacker.send("n0", [wire.Want(buckets=list(range(64)))], sender="x0")
    assert 0 < attacker.got_back <= MAX_STATE_CHUNKS * sim.config.max_datagram


@pytest.mark.parametrize("mode", MODES)
def test_a_clock_at_the_bound_cannot_block_later_injects(mode: str) -> None:
    sim, names, attacker = cluster(mode)
    for lt in (WIRE_INT_MAX, FIRST_SIGHT_MAX + 1, FIRST_SIGHT_MAX):
        rumor = wire.Rumor(
            id=f"evil{lt}", origin="n9", ts=sim.nodes["n0"].local.wall_ms(sim.now), lt=lt, hops=5, payload={"x": {}}
        )
        for dest in names:
            attacker.send(dest, [rumor])
    sim.run_for(1)
    mid = sim.inject("n3", {"later": {"ok": True}})
    sim.run_for(1)
    assert set(sim.deliveries(mid)) == set(names)


@pytest.mark.parametrize("mode", MODES)
def test_a_hijacked_address_is_refuted_by_its_owner(mode: str) -> None:
    sim, names, attacker = cluster(mode)
    victim = "n1"
    m = sim.nodes["n0"].table.members[victim]
    hijack = wire.Alive(node=victim, id=m.id, addr="forger:666", inc=m.inc + 1, tags=m.tags)
    for dest in names:
        if dest != victim:
            attacker.send(dest, [hijack])
    sim.run_for(1)
    assert {sim.nodes[n].table.members[victim].addr for n in names} == {sim.addr_of[victim]}
    assert not sim.false_deaths()


def add(sim: Simulation, description: str) -> None:
    sim.inject("n2", {"DeviceGossip": {"DeviceAdded": {"origin": DEVICE, "name": "gw", "description": description}}})
    sim.run_for(1)


def descriptions(sim: Simulation, names: list[str]) -> set[tuple[str, ...]]:
    return {tuple(r["description"] for r in views.device_rows(sim.nodes[n])) for n in names}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("lt", [2**40, LAMPORT_ADOPT_MAX])
def test_a_forged_tombstone_is_overtaken_by_the_next_update(mode: str, lt: int) -> None:
    """The clocks follow a forged version up to LAMPORT_ADOPT_MAX, so the device's next update
    overtakes it. (A version forged above it holds one device's record: only a key stops that.)"""
    sim, names, attacker = cluster(mode)
    add(sim, "d")
    removal = {"DeviceGossip": {"DeviceRemoved": {"origin": DEVICE, "name": "gw"}}}
    ts = sim.nodes["n0"].local.wall_ms(sim.now)
    for dest in names:
        attacker.send(dest, [wire.Rumor(id="tomb", origin="n9", ts=ts, lt=lt, hops=5, payload=removal)])
    sim.run_for(1)
    if mode == "outsider":
        assert descriptions(sim, names) == {("d",)}  # never removed
    else:
        assert descriptions(sim, names) == {()}
    add(sim, "again")
    assert descriptions(sim, names) == {("again",)}


def test_forged_heartbeats_cannot_hide_a_crash_from_an_encrypted_cluster() -> None:
    """In plaintext a datagram's sender is its word alone, so this one needs the key."""
    sim, names, attacker = cluster("outsider")
    sim.kill("n4")
    for _ in range(40):  # 10 s of heartbeats "from" the dead node, to each of its monitors
        for dest in names[:4]:
            attacker.send(dest, [wire.Heartbeat(inc=sim.nodes[dest].table.members["n4"].inc)], sender="n4")
        sim.run_for(0.25)
    assert all(sim.state_of("n4", seen_by=n) == "dead" for n in names[:4])
