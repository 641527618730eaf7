"""chatter-inject's request id becomes the message id (so ``--no-wait`` can print it), unless
it is not shaped like one or is already a message's id here."""

from __future__ import annotations

import uuid

from chatterd.core import wire
from chatterd.core.events import Delivery
from chatterd.core.node import Node
from tests.core.test_node import B, C, msgs_to, node, with_peer

PAD = " " * 300  # a stranger gets back no more than it sent: room for the ack


def inject(n: Node, rid: str, text: str, now: float) -> wire.InjectAck:
    n.receive(wire.encode([wire.Inject(rid=rid, payload={"DebugMessage": {"text": text}}, pad=PAD)]), C, now)
    (ack,) = [m for m in msgs_to(n, C) if isinstance(m, wire.InjectAck)]
    return ack


def test_a_request_id_shaped_like_a_message_id_is_the_message_id() -> None:
    n = node()
    rid = uuid.uuid4().hex
    ack = inject(n, rid, "x", 0.0)
    assert ack.id == rid
    assert [e.id for e in n.take_events() if isinstance(e, Delivery)] == [rid]


def test_other_request_ids_get_a_message_id_of_the_node() -> None:
    n = node()
    for i, rid in enumerate(["r1", "A" * 32, "g" * 32, "0" * 31, "0" * 33]):
        ack = inject(n, rid, f"m{i}", float(i))
        assert ack.id != rid and len(ack.id) == 32 and int(ack.id, 16) >= 0


def test_a_request_id_that_is_already_a_message_id_gets_a_new_one() -> None:
    """A client cannot make a new message take the id of one the node has seen: that one
    would be dropped everywhere as a duplicate while the client is told it was accepted."""
    n = with_peer()
    seen = uuid.uuid4().hex
    rumor = wire.Rumor(id=seen, origin="b", ts=1_800_000_000_000, lt=1, hops=0, payload={"x": {"y": 1}})
    n.receive(wire.encode([rumor], "b"), B, 0.5)
    assert [e.id for e in n.take_events() if isinstance(e, Delivery)] == [seen]
    ack = inject(n, seen, "second", 1.0)  # a request whose id is that message's
    assert ack.id != seen
    assert [(e.id, e.payload) for e in n.take_events() if isinstance(e, Delivery)] == [
        (ack.id, {"DebugMessage": {"text": "second"}})
    ]
