"""Protocol scenarios in virtual time over a simulated lossy network (seeded, reproducible)."""

import pytest

from chatterd import views as rows
from chatterd.core.config import LAN, LOCAL
from chatterd.core.events import Delivery, MemberEvent
from chatterd.sim import Simulation
from chatterd.testing import SimFactory

UUID = "541b10e7-d13a-45e8-8567-7d450ce86603"


def views(sim: Simulation, name: str) -> set[str | None]:
    return {sim.state_of(name, seen_by=n) for n in sim.live_names() if n != name}


def test_cluster_forms_through_one_seed(chatter_sim: SimFactory) -> None:
    sim = chatter_sim(30)
    names = sim.live_names()
    for n in names:
        assert {m.name for m in sim.nodes[n].table.members.values() if m.state == "alive"} == set(names)


def test_message_reaches_every_node_exactly_once(chatter_sim: SimFactory) -> None:
    sim = chatter_sim(30)
    names = sim.live_names()
    mid = sim.inject("n4", {"DebugMessage": {"text": "hello world"}})
    t0 = sim.now
    sim.run_for(2)
    got = sim.deliveries(mid)  # asserts no node got it twice
    assert set(got) == set(names)
    assert max(got.values()) - t0 < 0.2


def test_delivery_ratio_at_5_percent_loss(chatter_sim: SimFactory) -> None:
    """Rumor mongering reaches >= 99.9 % of (message, node) pairs at 5 % loss."""
    sim = chatter_sim(20, loss=0.05)
    names = sim.live_names()
    ids = []
    for i in range(300):
        ids.append(sim.inject(names[i % 20], {"seq": {"i": i}}))
        sim.run_for(0.05)
    sim.run_for(2)
    delivered = sum(len(sim.deliveries(mid)) for mid in ids)
    assert delivered / (len(ids) * 20) >= 0.999


def test_cluster_wide_sends_per_message_are_o_n_fanout(chatter_sim: SimFactory) -> None:
    """No message storm: each node transmits a message at most R times (R ~ log N)."""
    sim = chatter_sim(50)
    names = sim.live_names()
    sim.run_for(3)
    before = sim.sent
    t0 = sim.now
    sim.inject("n0", {"x": {"payload": 1}})
    sim.run_for(3)
    idle = chatter_sim(50)  # same cluster (same seed) without the message, for the background traffic
    assert idle.live_names() == names
    idle.run_for(3)
    idle_before = idle.sent
    idle.run_for(sim.now - t0)
    extra = (sim.sent - before) - (idle.sent - idle_before)
    # Repair summaries are a per-second cost while rumors are recent, not a per-message one:
    # at most about one per node per repair interval, plus the answers of nodes behind.
    summaries = sum(n.stats["repair_summaries"] for n in sim.nodes.values())
    assert summaries <= 2 * 50 * (sim.now - t0) / sim.config.repair_interval
    r = sim.config.retransmits(50)
    assert extra - summaries <= 50 * r  # every node at most R datagrams for it (often packed with others)


def test_kill_detected_by_every_survivor_within_bound(chatter_sim: SimFactory) -> None:
    sim = chatter_sim(30)
    names = sim.live_names()
    sim.kill("n7")
    t_kill = sim.now
    sim.run_for(6)
    fails = {r.observer: r.time - t_kill for r in sim.member_events("member-failed", "n7")}
    survivors = set(names) - {"n7"}
    assert set(fails) == survivors  # each survivor exactly once ...
    assert len(sim.member_events("member-failed", "n7")) == len(survivors)
    cfg = sim.config
    bound = cfg.suspect_after + cfg.suspicion_min + 0.2  # ... and within the bound
    assert max(fails.values()) <= bound
    assert max(fails.values()) <= 3.0
    # after_s, the silence each survivor reports, matches the time since the kill
    # (within one heartbeat interval: the last heartbeat went out before the kill).
    for r in sim.member_events("member-failed", "n7"):
        assert r.event.after_s is not None  # type: ignore[union-attr]
        silence_at_kill = r.event.after_s - (r.time - t_kill)  # type: ignore[union-attr]
        assert -0.05 <= silence_at_kill <= cfg.heartbeat_interval + 0.05
    assert not sim.false_deaths()


def test_kill_detected_at_5_percent_loss(chatter_sim: SimFactory) -> None:
    sim = chatter_sim(30, loss=0.05)
    sim.kill("n11")
    t_kill = sim.now
    sim.run_for(10)
    assert views(sim, "n11") == {"dead"}
    fails = [r.time - t_kill for r in sim.member_events("member-failed", "n11")]
    assert max(fails) <= sim.config.suspect_after + sim.config.suspicion_max + 0.5
    assert not sim.false_deaths()


def test_graceful_leave_is_seen_at_once_not_as_failure(chatter_sim: SimFactory) -> None:
    sim = chatter_sim(20, loss=0.05)
    names = sim.live_names()
    sim.leave("n3")
    t = sim.now
    sim.run_for(1)
    leaves = {r.observer: r.time - t for r in sim.member_events("member-leave", "n3")}
    assert set(leaves) == set(names) - {"n3"}
    assert max(leaves.values()) < 0.5
    sim.run_for(10)
    assert views(sim, "n3") == {"left"}
    assert not sim.member_events("member-failed", "n3")


def test_restarted_node_comes_back_alive(chatter_sim: SimFactory) -> None:
    sim = chatter_sim(10)
    sim.kill("n5")
    sim.run_for(5)
    assert views(sim, "n5") == {"dead"}
    sim.restart("n5", join=["n0"])
    sim.run_for(3)
    assert views(sim, "n5") == {"alive"}
    assert len(sim.member_events("member-recover", "n5")) == 9
    assert {m.state for m in sim.nodes["n5"].table.members.values()} == {"alive"}


def test_one_deaf_monitor_is_answered_by_the_others_vouches(chatter_sim: SimFactory) -> None:
    """A monitor that stops hearing a live node probes it through the node's other monitors,
    which vouch for it: no suspicion at all (lan profile, probe_before_suspect)."""
    sim = chatter_sim(10)
    target = "n2"
    monitor = sim.nodes[target].ring.successors(target, 3)[0]
    sim.block(target, monitor)
    sim.run_for(30)
    assert not sim.member_events("member-suspect", target)
    assert sim.nodes[monitor].stats["probe_requests"] >= 10  # it did doubt, every time
    assert not sim.false_deaths()
    sim.heal()
    sim.run_for(5)
    assert views(sim, target) == {"alive"}


def test_one_lossy_monitor_is_refuted_not_fatal(chatter_sim: SimFactory) -> None:
    """Without probes (local profile), a single monitor that stops hearing a live node
    suspects it; the node refutes."""
    sim = chatter_sim(10, config=LOCAL)
    target = "n2"
    monitor = sim.nodes[target].ring.successors(target, 3)[0]
    sim.block(target, monitor)
    sim.run_for(30)
    assert sim.member_events("member-suspect", target)
    assert sim.nodes[target].stats["refutations"] >= 1
    assert not sim.false_deaths()  # one accuser never outlasts the refutation
    sim.heal()
    sim.run_for(5)
    assert views(sim, target) == {"alive"}


def test_partition_then_heal_converges(chatter_sim: SimFactory) -> None:
    sim = chatter_sim(20)
    names = sim.live_names()
    a, b = names[:10], names[10:]
    sim.partition(a, b)
    sim.run_for(10)
    for n in a:
        assert {sim.state_of(m, seen_by=n) for m in b} == {"dead"}
    sim.heal()
    t = sim.now
    for _ in range(60):
        sim.run_for(1)
        if all(views(sim, n) == {"alive"} for n in names):
            break
    assert all(views(sim, n) == {"alive"} for n in names), "did not converge after heal"
    assert sim.now - t <= 30


def test_starved_node_does_not_accuse_the_others(chatter_sim: SimFactory) -> None:
    """Lifeguard's local health: a node whose own timers stalled blames nobody for it."""
    sim = chatter_sim(10)
    sim.pause("n4")
    sim.run_for(5)  # the others declare n4 dead meanwhile
    sim.resume("n4")
    sim.run_for(5)
    accusations = [
        r
        for r in sim.records
        if r.observer == "n4"
        and isinstance(r.event, MemberEvent)
        and r.event.kind in ("member-suspect", "member-failed")
        and r.event.node != "n4"
    ]
    assert accusations == []
    assert sim.nodes["n4"].stats["starved"] >= 1
    assert views(sim, "n4") == {"alive"}  # it refuted and came back


@pytest.mark.parametrize("loss", [0.05, 0.15])
def test_long_soak_under_loss_has_no_false_deaths(chatter_sim: SimFactory, loss: float) -> None:
    sim = chatter_sim(20, loss=loss)
    names = sim.live_names()
    sim.run_for(600)  # ten virtual minutes
    assert sim.false_deaths() == []
    assert all(views(sim, n) == {"alive"} for n in names)


def test_devices_converge_and_late_joiner_catches_up(chatter_sim: SimFactory) -> None:
    sim = chatter_sim(10, loss=0.05)
    names = sim.live_names()
    sim.inject("n1", {"DeviceGossip": {"DeviceAdded": {"origin": UUID, "name": "gw", "description": "router"}}})
    sim.run_for(0.5)
    metrics = {"load": {"Text": "0.3"}}
    sim.inject("n2", {"DeviceGossip": {"DeviceStatus": {"origin": UUID, "name": "gw", "metrics": metrics}}})
    sim.inject("n3", {"DeviceGossip": {"DeviceAdded": {"origin": UUID, "name": "ap", "description": "wifi"}}})
    sim.run_for(0.5)
    sim.inject("n4", {"DeviceGossip": {"DeviceRemoved": {"origin": UUID, "name": "ap"}}})
    sim.run_for(2)
    want = [{"origin": UUID, "name": "gw", "description": "router", "metrics": metrics}]
    for n in names:
        assert rows.device_rows(sim.nodes[n]) == want
    sim.add_node("late", join=["n0"])
    sim.run_for(2)
    assert rows.device_rows(sim.nodes["late"]) == want


def test_same_seed_same_history(chatter_sim: SimFactory) -> None:
    def run() -> list[tuple[float, str, str]]:
        sim = chatter_sim(10, seed=42, loss=0.1)
        sim.kill("n3")
        sim.inject("n1", {"a": {"b": 1}})
        sim.run_for(5)
        return [(r.time, r.observer, type(r.event).__name__) for r in sim.records]

    assert run() == run()


def test_hop_budget_limits_forwarding(chatter_sim: SimFactory) -> None:
    sim = chatter_sim(10)
    node = sim.nodes["n0"]
    mid = node.inject({"x": {"y": 1}}, sim.now, hops=0)
    sim.step(node)
    sim.run_for(1)
    assert set(sim.deliveries(mid)) == {"n0"}  # hops 0: delivered locally, never forwarded
    rows = [r for r in sim.records if isinstance(r.event, Delivery) and r.event.id == mid]
    assert len(rows) == 1


def test_anti_entropy_repairs_what_gossip_missed(chatter_sim: SimFactory) -> None:
    """A device update that is never forwarded (hops 0) still reaches every node by push-pull."""
    sim = chatter_sim(20)
    names = sim.live_names()
    node = sim.nodes["n0"]
    node.inject({"DeviceGossip": {"DeviceAdded": {"origin": UUID, "name": "gw", "description": "r"}}}, sim.now, hops=0)
    sim.step(node)
    sim.run_for(0.05)  # longer than gossip needs, shorter than the next digest exchange
    assert sum(1 for n in names if rows.device_rows(sim.nodes[n])) == 1  # gossip did not carry it
    # push-pull every 30 s ± 25 %, with one random peer: an epidemic of its own, in rounds
    for _ in range(20):
        if all(rows.device_rows(sim.nodes[n]) for n in names):
            break
        sim.run_for(30)
    assert all(rows.device_rows(sim.nodes[n]) for n in names)
    assert len({tuple(sim.nodes[n].digest.hashes) for n in names}) == 1  # every digest agrees


def test_repair_delivers_every_message_everywhere_despite_heavy_loss(chatter_sim: SimFactory) -> None:
    """With a starved gossip budget and 20 % loss, mongering misses many (message, node)
    pairs; the repair exchange delivers every one of them within seconds."""
    config = LAN.replace(fanout=2, retransmit_mult=0.5)
    sim = chatter_sim(20, seed=3, loss=0.20, config=config)
    names = sim.live_names()
    ids = []
    for i in range(200):
        ids.append(sim.inject(names[i % 20], {"seq": {"i": i}}))
        sim.run_for(0.01)
    sim.run_for(0.5)
    early = sum(len(sim.deliveries(mid)) for mid in ids)
    assert early < len(ids) * 20  # gossip alone missed some
    sim.run_for(10)
    assert all(set(sim.deliveries(mid)) == set(names) for mid in ids)
    assert sum(n.stats["repaired"] for n in sim.nodes.values()) > 0
    # Each delivered once per node, repairs included.
    rows = [r for r in sim.records if isinstance(r.event, Delivery) and r.event.id in set(ids)]
    assert len(rows) == len(ids) * 20


def test_repair_reaches_a_node_that_missed_a_whole_stream(chatter_sim: SimFactory) -> None:
    sim = chatter_sim(10)
    names = sim.live_names()
    for other in names:
        if other != "n5":
            sim.block(other, "n5")
    mid = sim.inject("n0", {"only": {"one": 1}})
    sim.run_for(0.3)
    assert "n5" not in sim.deliveries(mid)
    sim.heal()
    sim.run_for(5)
    assert "n5" in sim.deliveries(mid)


def test_repair_stops_when_the_cluster_goes_quiet(chatter_sim: SimFactory) -> None:
    sim = chatter_sim(10)
    sim.inject("n0", {"x": {"y": 1}})
    sim.run_for(sim.config.repair_window + 3)
    assert all(n.repair.next_round is None and not n.repair.store.streams for n in sim.nodes.values())
    before = sum(n.stats["repair_summaries"] for n in sim.nodes.values())
    sim.run_for(10)
    assert sum(n.stats["repair_summaries"] for n in sim.nodes.values()) == before


def test_a_restarted_node_is_not_sent_the_messages_of_before_its_start(chatter_sim: SimFactory) -> None:
    sim = chatter_sim(10)
    old = sim.inject("n1", {"x": {"y": 1}})
    sim.run_for(1)
    sim.kill("n3")
    sim.run_for(0.5)
    sim.restart("n3", join=["n0"])
    sim.run_for(8)
    late = [r for r in sim.records if isinstance(r.event, Delivery) and r.event.id == old and r.observer == "n3"]
    assert len(late) == 1  # only its first life's delivery
    new = sim.inject("n1", {"x": {"y": 2}})
    sim.run_for(1)
    assert "n3" in sim.deliveries(new)
