"""Tags in virtual time: a tag change reaches every node once, late joiners learn tags by
push-pull, and records with the biggest tags still fit in a datagram."""

from chatterd import views
from chatterd.core.events import MemberEvent
from chatterd.core.tags import MAX_TAGS_BYTES, encoded_size
from chatterd.sim import Simulation
from chatterd.testing import SimFactory


def member_events_about(sim: Simulation, node: str, since: float) -> list[tuple[str, str]]:
    """(observer, kind) of every member event about ``node`` recorded since ``since``."""
    return [
        (r.observer, r.event.kind)
        for r in sim.records
        if isinstance(r.event, MemberEvent) and r.event.node == node and r.time >= since
    ]


def biggest_tags(prefix: str) -> dict[str, str]:
    """Tags of exactly MAX_TAGS_BYTES encoded."""
    tags = {f"{prefix}-key": ""}
    tags[f"{prefix}-key"] = "v" * (MAX_TAGS_BYTES - encoded_size(tags))
    assert encoded_size(tags) == MAX_TAGS_BYTES
    return tags


def test_tag_change_reaches_every_node_and_fires_member_update_once_each(chatter_sim: SimFactory) -> None:
    sim = chatter_sim(20)
    names = sim.live_names()
    inc_before = sim.nodes["n5"].inc
    t0 = sim.now
    assert sim.set_tags("n5", {"role": "db", "dc": "east"})
    sim.run_for(3)
    for n in names:
        m = sim.nodes[n].table.get("n5")
        assert m is not None and m.state == "alive", n
        assert m.tags == {"role": "db", "dc": "east"}, n
        assert m.inc == inc_before + 1, n
    events = member_events_about(sim, "n5", t0)
    assert sorted(events) == sorted((n, "member-update") for n in names)  # n5 included, once each
    updates = [r.event for r in sim.records if isinstance(r.event, MemberEvent) and r.time >= t0]
    assert all(ev.tags == {"role": "db", "dc": "east"} for ev in updates)

    # The same tags again are no change: no new incarnation, no event.
    assert not sim.set_tags("n5", {"dc": "east", "role": "db"})
    t1 = sim.now
    sim.run_for(3)
    assert member_events_about(sim, "n5", t1) == []

    # Deleting a tag is a change like any other.
    assert sim.set_tags("n5", {"role": "db"})
    sim.run_for(3)
    assert all(sim.nodes[n].table.members["n5"].tags == {"role": "db"} for n in names)
    assert sorted(member_events_about(sim, "n5", t1)) == sorted((n, "member-update") for n in names)


def test_tag_change_reaches_every_node_at_5_percent_loss(chatter_sim: SimFactory) -> None:
    sim = chatter_sim(20, loss=0.05, seed=3)
    names = sim.live_names()
    t0 = sim.now
    sim.set_tags("n2", {"role": "web"})
    sim.run_for(12)  # gossip, then push-pull for the rare node every retransmission missed
    assert all(sim.nodes[n].table.members["n2"].tags == {"role": "web"} for n in names)
    events = member_events_about(sim, "n2", t0)
    assert sorted(events) == sorted((n, "member-update") for n in names)


def test_initial_tags_and_late_joiner_learns_everyones_tags(chatter_sim: SimFactory) -> None:
    sim = chatter_sim(seed=2)
    sim.add_node("n0", tags={"role": "seed"})
    for i in range(1, 8):
        sim.add_node(f"n{i}", join=["n0"], tags={"i": str(i)})
    sim.run_for(5)
    sim.set_tags("n3", {"i": "3", "extra": "yes"})
    sim.run_for(3)
    sim.add_node("late", join=["n1"])
    sim.run_for(5)
    late = sim.nodes["late"].table.members
    assert late["n0"].tags == {"role": "seed"}
    assert late["n3"].tags == {"i": "3", "extra": "yes"}
    assert all(late[f"n{i}"].tags == {"i": str(i)} for i in (1, 2, 4, 5, 6, 7))
    assert late["late"].tags == {}
    rows = {r["name"]: r for r in views.member_rows(sim.nodes["n6"], sim.now)}
    assert rows["n0"]["tags"] == {"role": "seed"} and rows["late"]["tags"] == {}
    # The late joiner's arrival is a join, not an update, everywhere.
    assert {k for _, k in member_events_about(sim, "late", 0)} == {"member-join"}


def test_restarted_node_comes_back_with_its_new_tags(chatter_sim: SimFactory) -> None:
    sim = chatter_sim(10)
    names = sim.live_names()
    sim.kill("n4")
    sim.run_for(6)
    assert all(sim.state_of("n4", seen_by=n) == "dead" for n in names if n != "n4")
    sim.restart("n4", join=["n0"])
    sim.set_tags("n4", {"version": "2"})
    sim.run_for(5)
    assert all(sim.nodes[n].table.members["n4"].tags == {"version": "2"} for n in names)
    assert all(sim.state_of("n4", seen_by=n) == "alive" for n in names)


def test_datagrams_stay_within_max_datagram_with_the_biggest_tags(chatter_sim: SimFactory) -> None:
    """Every member carrying 512 bytes of tags: state chunks and gossip still fit 1400 bytes."""
    sim = chatter_sim(seed=4)
    sim.add_node("n0", tags=biggest_tags("n0"))
    for i in range(1, 12):
        sim.add_node(f"n{i}", join=["n0"], tags=biggest_tags(f"n{i}"))
    sim.run_for(8)
    for i in range(12):
        sim.set_tags(f"n{i}", biggest_tags(f"x{i}"))
    sim.add_node("late", join=["n5"])
    sim.run_for(12)  # joins, state replies, gossip and push-pull by digest
    names = [f"n{i}" for i in range(12)] + ["late"]
    for n in names:
        table = sim.nodes[n].table.members
        assert {m for m in table if table[m].state == "alive"} == set(names), n
        assert all(table[f"n{i}"].tags == biggest_tags(f"x{i}") for i in range(12)), n
    assert 1000 < sim.largest <= sim.config.max_datagram
    assert not any(node.stats["malformed"] for node in sim.nodes.values())
