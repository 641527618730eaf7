"""No reflection: a node answers an address no member has with at most as many bytes as it
received, whatever the message; joining still works (the joiner pads its Join), and answers
to members are bounded too (MAX_STATE_CHUNKS datagrams per request)."""

from __future__ import annotations

import pytest

from chatterd.core import wire
from chatterd.core.config import LAN, MAX_STATE_CHUNKS
from chatterd.core.digest import BUCKETS
from chatterd.core.node import Node
from tests.core.test_node import BID, B, node, with_peer

STRANGER = ("192.0.2.66", 6666)  # a spoofed victim address: no member has it


def crowded(members: int, tag_bytes: int = 0) -> Node:
    """Node a that knows b and ``members`` more peers (through b's gossip)."""
    n = with_peer()
    tags = {"pad": "x" * tag_bytes} if tag_bytes else {}
    news = [
        wire.Alive(node=f"p{i:05}", id=f"id-{i}", addr=f"10.1.{i // 250}.{i % 250}:9", inc=1, tags=tags)
        for i in range(members)
    ]
    for i in range(0, len(news), 5):
        n.receive(wire.encode(news[i : i + 5], "b"), B, 0.5)
    n.handle_timers(0.5)
    n.take_outgoing()
    n.take_events()
    assert len(n.table) == members + 2
    return n


def bytes_to(n: Node, dest: tuple[str, int]) -> int:
    return sum(len(d) for d, a in n.take_outgoing() if a == dest)


def hostile_requests(n: Node) -> list[list[wire.Message]]:
    me = n.name
    return [
        [wire.Join(node="evil", id=BID, addr="192.0.2.66:6666", inc=1)],
        [wire.DigestMsg(h=[1] * BUCKETS)],
        [wire.Want(buckets=list(range(BUCKETS)))],
        [wire.Have(s=[], since=0, all=True)],
        [wire.Have(s=[("b", 1, 1, 2, [])], since=0, all=False)],
        [wire.Lease(inc=1)],
        [wire.Inject(rid="r", payload={"DebugMessage": {"text": "x"}})],
        [wire.Inject(rid="r", payload={"no": "such kind"})],
        [wire.Dead(node=me, inc=n.inc, by="x")],
        [wire.Suspect(node=me, inc=n.inc, by="x")],
        [wire.Alive(node=me, id="other", addr="192.0.2.66:6666", inc=n.inc + 1)],
        [wire.State(members=[wire.MemberRecord(node=me, id="x", addr="h:1", inc=n.inc, state="dead")], reply=True)],
        [wire.State(reply=True)],
    ]


@pytest.mark.parametrize("index", range(13))
def test_a_stranger_gets_back_at_most_the_bytes_it_sent(index: int) -> None:
    n = crowded(60)
    msgs = hostile_requests(n)[index]
    data = wire.encode(msgs, "evil")
    n.receive(data, STRANGER, 1.0)
    assert bytes_to(n, STRANGER) <= len(data)  # the answers (what gossip does later is not one)
    n.handle_timers(1.0)
    assert n.next_deadline() >= 1.0


def test_a_forged_join_is_withheld_and_counted_and_a_padded_join_gets_one_chunk() -> None:
    n = crowded(60)
    join = wire.Join(node="evil", id=BID, addr="192.0.2.66:6666", inc=1)
    small = wire.encode([join], "evil")
    n.receive(small, STRANGER, 1.0)
    assert bytes_to(n, STRANGER) == 0 and n.stats["reflection_withheld"] >= 2
    # A real joiner pads its Join to max_datagram: the seed answers with one State chunk.
    joiner = node("j", addr=("10.0.0.9", 9), seeds=[("10.0.0.1", 1)])
    data = joiner.sync.join_datagram()
    assert len(data) == LAN.max_datagram
    n.receive(data, ("10.0.0.9", 9), 1.0)
    answer = [d for d, a in n.take_outgoing() if a == ("10.0.0.9", 9)]
    assert len(answer) == 1 and len(answer[0]) <= len(data)
    joiner.receive(answer[0], ("10.0.0.1", 1), 1.0)
    assert joiner.joined and 2 <= len(joiner.table) < len(n.table)
    # Now a member: its push-pull digest gets the rest; a few exchanges converge.
    J, S = ("10.0.0.9", 9), ("10.0.0.1", 1)
    for _ in range(3):
        n.receive(wire.encode([wire.DigestMsg(h=list(joiner.digest.hashes))], "j"), J, 1.5)
        for d, a in n.take_outgoing():
            if a == J:
                joiner.receive(d, S, 1.5)
        for d, a in joiner.take_outgoing():
            if a == S:
                n.receive(d, J, 1.5)
        n.take_outgoing()
    assert set(joiner.table.members) == set(n.table.members)


def test_answers_to_members_are_bounded_per_request() -> None:
    n = crowded(900, tag_bytes=200)
    n.receive(wire.encode([wire.Want(buckets=list(range(BUCKETS)))], "b"), B, 1.0)
    out = [d for d, a in n.take_outgoing() if a == B]
    assert len(out) == MAX_STATE_CHUNKS and n.stats["state_chunks_withheld"] > 0
    assert all(len(d) <= LAN.max_datagram for d in out)
