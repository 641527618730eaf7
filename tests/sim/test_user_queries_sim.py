"""User queries (`chatterd query`, `chatterd reachability`) in virtual time: filters judged by
each receiver, acks, responses from the handlers, relays around a broken link, the timeout
and the summary, and the bounds that hold against hostile queries."""

from __future__ import annotations

import json
import time

import pytest

from chatterd.core import wire
from chatterd.core.config import LAN, MAX_PENDING_USER_QUERIES, QUERY_DATA_MAX, QUERY_RESPONSE_MAX, QUERY_TIMEOUT_MAX
from chatterd.core.events import QueryRequest, QueryUpdate
from chatterd.core.query import QueryError
from chatterd.core.userquery import REACH_QUERY, UserQuery, default_timeout
from chatterd.sim import Simulation


def cluster(n: int, seed: int, handlers: dict[str, list[str]] | None = None, **kw: object) -> Simulation:
    sim = Simulation(seed=seed, **kw)  # type: ignore[arg-type]
    sim.start_cluster(n)
    for name, names in (handlers or {}).items():
        sim.nodes[name].user_queries.set_handled(names)
    return sim


def answer_requests(sim: Simulation, done: set[int], reply: str = "{node} says {data}") -> None:
    """What a shell does: each QueryRequest's handler answers (here at once)."""
    for i, r in enumerate(sim.records):
        if i in done or not isinstance(r.event, QueryRequest):
            continue
        done.add(i)
        node = sim.nodes[r.observer]
        node.user_queries.respond(r.event.id, reply.format(node=r.observer, data=r.event.data), "", sim.now)
        sim.step(node)


def run_query(sim: Simulation, asker: str, q: UserQuery, reply: str = "{node} says {data}") -> list[QueryUpdate]:
    node = sim.nodes[asker]
    uq = node.user_queries
    qid = uq.reachability(q.timeout, sim.now) if q.name == REACH_QUERY else uq.ask(q, sim.now)
    sim.step(node)
    answered: set[int] = set()
    for _ in range(2000):
        answer_requests(sim, answered, reply)
        updates = [r.event for r in sim.records if isinstance(r.event, QueryUpdate) and r.event.id == qid]
        if updates and updates[-1].kind == "done":
            return updates
        sim.run_for(0.01)
    raise AssertionError("the query never ended")


def of(updates: list[QueryUpdate], kind: str) -> dict[str, QueryUpdate]:
    return {u.node: u for u in updates if u.kind == kind}


def test_acks_and_responses_from_every_member_with_a_handler() -> None:
    sim = cluster(5, 1, {"n1": ["uptime"], "n2": ["uptime"], "n4": ["other"]})
    ups = run_query(sim, "n0", UserQuery("uptime", "hi", timeout=1.0))
    assert set(of(ups, "ack")) == {"n0", "n1", "n2", "n3", "n4"}  # everyone acks
    responses = of(ups, "response")
    assert set(responses) == {"n1", "n2"}  # only those with a handler for the name answer
    assert responses["n1"].data == "n1 says hi" and responses["n1"].rtt > 0
    done = ups[-1]
    assert done.asked == ("n0", "n1", "n2", "n3", "n4") and done.answered == ("n1", "n2") and done.silent == ()


def test_filters_are_judged_by_each_receiver_and_the_others_still_pass_it_on() -> None:
    sim = Simulation(seed=2)
    sim.add_node("n0", tags={"role": "lb"})
    for i in range(1, 6):
        sim.add_node(f"n{i}", join=["n0"], tags={"role": "web" if i % 2 else "db", "dc": f"eu-{i}"})
    sim.run_for(5)
    for n in sim.nodes.values():
        n.user_queries.set_handled(["q"])
    # n0 may reach the web nodes only through the db nodes: they pass it on without answering.
    for web in ("n1", "n3", "n5"):
        sim.block("n0", web)
    ups = run_query(sim, "n0", UserQuery("q", "x", tags={"role": "^web$"}, timeout=1.0))
    assert set(of(ups, "response")) == {"n1", "n3", "n5"} == set(of(ups, "ack"))
    assert ups[-1].asked == ("n1", "n3", "n5") and ups[-1].silent == ()
    assert all(sim.nodes[n].stats["queries_filtered_out"] == 1 for n in ("n2", "n4"))
    sim.heal()
    ups = run_query(sim, "n2", UserQuery("q", nodes=("n1", "n4"), tags={"dc": "eu"}, timeout=1.0))
    assert set(of(ups, "response")) == {"n1", "n4"}


def test_no_ack_means_responses_only() -> None:
    sim = cluster(4, 3, {"n3": ["q"]})
    ups = run_query(sim, "n1", UserQuery("q", ack=False, timeout=0.5))
    assert of(ups, "ack") == {} and set(of(ups, "response")) == {"n3"}


def test_a_dead_member_times_out_and_the_query_ends_at_its_timeout() -> None:
    sim = cluster(4, 4)
    sim.kill("n3")
    start = sim.now
    ups = run_query(sim, "n0", UserQuery("q", timeout=2.0))
    assert ups[-1].silent == ("n3",) and ups[-1].acked == ("n0", "n1", "n2")
    assert sim.now - start == pytest.approx(2.0, abs=0.05)


def test_relays_bring_the_response_around_a_broken_link_counted_once() -> None:
    sim = cluster(6, 5, {"n5": ["q"]})
    sim.block("n5", "n0")  # n5 hears n0 but cannot answer it directly
    ups = run_query(sim, "n0", UserQuery("q", timeout=0.5))
    assert "n5" not in of(ups, "response") and ups[-1].silent == ("n5",)
    ups = run_query(sim, "n0", UserQuery("q", relay=3, timeout=0.5))
    assert [u.node for u in ups if u.kind == "response"] == ["n5"]  # once, though up to 3 copies came
    assert sim.nodes["n5"].stats["query_responses_relayed"] >= 3
    sim.heal()
    ups = run_query(sim, "n0", UserQuery("q", relay=2, timeout=0.5))
    assert [u.node for u in ups if u.kind == "response"] == ["n5"]
    assert sim.nodes["n0"].stats["answer_duplicates"] >= 1  # direct and relayed: deduplicated


def test_a_lost_ack_is_asked_again_directly() -> None:
    sim = cluster(3, 6)
    sim.block("n2", "n0")
    node = sim.nodes["n0"]
    qid = node.user_queries.ask(UserQuery("q", timeout=2.0), sim.now)
    sim.step(node)
    sim.run_for(0.3)
    sim.heal()  # n2's ack was lost; the asker asks again at the next quarter
    sim.run_for(2.0)
    ups = [r.event for r in sim.records if isinstance(r.event, QueryUpdate) and r.event.id == qid]
    assert set(of(ups, "ack")) == {"n0", "n1", "n2"} and ups[-1].silent == ()
    assert of(ups, "ack")["n2"].rtt >= 0.4


def test_reachability_ends_once_every_member_acked_and_names_the_paused_one() -> None:
    sim = cluster(5, 7)
    ups = run_query(sim, "n1", UserQuery(REACH_QUERY, timeout=2.0))
    assert ups[-1].silent == () and sim.now < 1.0 + 5.0 + 1.0  # ended early
    sim.pause("n4")
    start = sim.now
    node = sim.nodes["n1"]
    qid = node.user_queries.reachability(1.0, sim.now)
    sim.step(node)
    sim.run_for(1.1)
    ups = [r.event for r in sim.records if isinstance(r.event, QueryUpdate) and r.event.id == qid]
    assert ups[-1].kind == "done" and ups[-1].silent == ("n4",) and sim.now - start < 1.2
    with pytest.raises(QueryError, match="invalid query name"):
        node.user_queries.ask(UserQuery(REACH_QUERY), sim.now)  # reserved for the node itself


def test_request_and_response_limits() -> None:
    sim = cluster(3, 8, {"n1": ["q"]})
    uq = sim.nodes["n0"].user_queries
    with pytest.raises(QueryError, match="over the 1024-byte limit"):
        uq.ask(UserQuery("q", "é" * (QUERY_DATA_MAX // 2 + 1)), sim.now)
    with pytest.raises(QueryError, match="relay factor"):
        uq.ask(UserQuery("q", relay=6), sim.now)
    with pytest.raises(QueryError, match="not a regular expression"):
        uq.ask(UserQuery("q", tags={"role": "("}), sim.now)
    with pytest.raises(QueryError, match="invalid query name"):
        uq.ask(UserQuery("bad name"), sim.now)
    ups = run_query(sim, "n0", UserQuery("q", timeout=0.5), reply="x" * (QUERY_RESPONSE_MAX + 1))
    r = of(ups, "response")["n1"]
    assert r.data == "" and "over the 1024-byte limit" in r.error
    ups = run_query(sim, "n0", UserQuery("q", timeout=0.5), reply="y" * QUERY_RESPONSE_MAX)
    assert of(ups, "response")["n1"].data == "y" * QUERY_RESPONSE_MAX


def test_default_timeout_grows_with_the_cluster_like_serfs() -> None:
    assert [default_timeout(LAN, n) for n in (1, 9, 10, 99, 100, 5000)] == [1.0, 1.0, 2.0, 2.0, 3.0, 4.0]
    assert default_timeout(LAN.replace(gossip_interval=0.2), 3) == pytest.approx(3.2)  # Serf's own figure


def test_pending_and_answering_are_bounded() -> None:
    sim = cluster(2, 9, {"n1": ["q"]})
    uq = sim.nodes["n0"].user_queries
    for _ in range(MAX_PENDING_USER_QUERIES):
        uq.ask(UserQuery("q", timeout=1.0), sim.now)
    with pytest.raises(QueryError, match="too many queries"):
        uq.ask(UserQuery("q", timeout=1.0), sim.now)
    sim.step(sim.nodes["n0"])
    sim.run_for(1.5)  # n1's handler never answers: its requests expire, nothing stays behind
    assert not uq.asked and not sim.nodes["n1"].user_queries.answering


def hostile_query(**fields: object) -> bytes:
    q = {"type": "query", "id": "x1", "origin": "n0", "name": "q", "ts": 0, "timeout": 1000} | fields
    return json.dumps({"v": 1, "from": "n0", "m": [q]}).encode()


@pytest.mark.parametrize(
    "fields",
    [
        {"relay": 6},
        {"relay": -1},
        {"tags": {"k": "a" * 129}},
        {"tags": {f"k{i}": "a" for i in range(9)}},
        {"nodes": [f"n{i}" for i in range(33)]},
        {"nodes": [""]},
        {"data": "d" * (QUERY_DATA_MAX + 1)},
        {"ack": "yes"},
    ],
)
def test_the_decoder_refuses_out_of_bounds_queries(fields: dict[str, object]) -> None:
    with pytest.raises(wire.WireError):
        wire.decode(hostile_query(**fields))


def test_the_decoder_refuses_acks_with_content_and_oversize_responses() -> None:
    ack = wire.encode([wire.Answer(id="x", node="n1", ack=True, data="no")], "n1")
    with pytest.raises(wire.WireError, match="acknowledgement"):
        wire.decode(ack)
    big = wire.encode([wire.Answer(id="x", node="n1", data="z" * (QUERY_RESPONSE_MAX + 1))], "n1")
    with pytest.raises(wire.WireError, match="too long"):
        wire.decode(big)


def test_hostile_filters_and_strangers_are_dropped_and_counted() -> None:
    sim = cluster(3, 10, {"n1": ["q"]})
    n1 = sim.nodes["n1"]
    wall = int((sim.now + n1.local.wall_offset) * 1000)
    # A pattern that does not compile, and one built to backtrack: no answer, no stall.
    started = time.monotonic()
    n1.local.tags["k"] = "x" * 60
    for i, pattern in enumerate(["(", "^(x|x?)+y$", "(x+x+)+y"]):
        n1.receive(hostile_query(id=f"h{i}", ts=wall, tags={"k": pattern}), sim.addr_of["n0"], sim.now)
    assert time.monotonic() - started < 1.0
    dropped, filtered = n1.stats["query_dropped_filter"], n1.stats["queries_filtered_out"]
    assert dropped >= 1 and dropped + filtered == 3
    assert not [r for r in sim.records if isinstance(r.event, QueryRequest)]
    assert not [d for d, addr in n1.take_outgoing() if b'"answer"' in d]
    # An answer for a query we asked, from an address that is not the member's: dropped.
    n0 = sim.nodes["n0"]
    qid = n0.user_queries.ask(UserQuery("q", timeout=1.0), sim.now)
    forged = wire.encode([wire.Answer(id=qid, node="n2", data="forged")], "n2")
    n0.receive(forged, ("sim", 999), sim.now)
    relayed = wire.encode([wire.Answer(id=qid, node="n2", data="forged", to="n0")], "x")
    n0.receive(relayed, ("sim", 998), sim.now)
    assert n0.stats["answer_dropped_source"] == 2
    # A relay request from a stranger is not passed on.
    n1.receive(wire.encode([wire.Answer(id=qid, node="n2", to="n0")], "x"), ("sim", 997), sim.now)
    assert n1.stats["answer_dropped_relay"] == 1 and not n1.take_outgoing()


def test_the_asker_answers_itself_and_a_query_for_nobody_ends_at_once() -> None:
    sim = cluster(3, 11, {"n0": ["q"]})
    start = sim.now
    ups = run_query(sim, "n0", UserQuery("q", "me", nodes=("n0",), timeout=5.0))
    assert [(u.kind, u.node) for u in ups] == [("ack", "n0"), ("response", "n0"), ("done", "")]
    assert ups[1].data == "n0 says me" and sim.now - start < 0.1  # ended with the one response expected
    ups = run_query(sim, "n0", UserQuery("q", nodes=("nobody",), timeout=5.0))
    assert [u.kind for u in ups] == ["done"] and ups[0].asked == ()
    sim.run_for(0.5)
    assert sim.nodes["n1"].stats["queries_filtered_out"] == 2  # it still saw (and passed on) both


def test_the_default_timeout_allows_for_the_slowest_link_the_coordinates_know() -> None:
    assert default_timeout(LAN, 5, 0.4) == pytest.approx(1.8)  # 1 s for the size, two 0.4 s round trips
    assert default_timeout(LAN, 5, 1e9) == QUERY_TIMEOUT_MAX and default_timeout(LAN, 5, -1.0) == 1.0


@pytest.mark.parametrize("coordinates", [True, False])
def test_a_member_behind_a_slow_link_answers_within_the_default_timeout(coordinates: bool) -> None:
    """n3 sits behind a 0.6 s access link (a 1.2 s round trip, over the 1 s a 6-member cluster
    gets): with coordinates its answer arrives in time; without them (the control) it does not."""
    config = LAN.replace(rtt_interval=5.0, coordinates=coordinates)
    sim = cluster(6, 7, {"n3": ["q"]}, config=config, latency=(0.0001, 0.0003))
    sim.set_delay("n3", 0.6)
    sim.run_for(10 * 60)  # the coordinates settle (probes every 5 s)
    ups = run_query(sim, "n0", UserQuery("q", "x"))
    done = ups[-1]
    if coordinates:
        assert done.answered == ("n3",) and done.silent == ()
        assert of(ups, "response")["n3"].rtt > 1.0  # it did take longer than the size's 1 s
    else:
        assert done.answered == () and "n3" in done.silent + done.acked
