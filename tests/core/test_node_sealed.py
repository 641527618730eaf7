"""Node with a keyring, by hand: it opens before decoding, seals all it sends, refuses
plaintext and replays; a node without a key is unchanged and refuses sealed datagrams."""

from __future__ import annotations

import random
from typing import Any

from chatterd.core import wire
from chatterd.core.config import LAN, SEAL_OVERHEAD
from chatterd.core.events import MemberEvent
from chatterd.core.keyring import Keyring
from chatterd.core.node import Node
from chatterd.core.seal import Sealer, boot_id

A = ("10.0.0.1", 1)
B = ("10.0.0.2", 2)
BID = "00000000-0000-4000-8000-00000000000b"
KEY = bytes(range(32))


def sealer(seed: int, label: str = "", start: int = 1000) -> Sealer:
    rng = random.Random(seed)
    return Sealer(Keyring([KEY]), label, salt=rng.randbytes(4), counter=rng.getrandbits(62), boot=boot_id(start, seed))


def node(**kw: Any) -> Node:
    return Node(LAN, "a", A, now=0.0, wall_offset=1_800_000_000.0, rng=random.Random(7), **kw)


def alive_b(inc: int = 5) -> bytes:
    return wire.encode([wire.Alive(node="b", id=BID, addr="10.0.0.2:2", inc=inc)], "b")


def joined(n: Node) -> list[tuple[str, str]]:
    return [(e.kind, e.node) for e in n.take_events() if isinstance(e, MemberEvent)]


def test_a_sealed_node_accepts_sealed_news_and_seals_its_answers() -> None:
    b = sealer(2)
    n = node(sealer=sealer(1))
    assert n.cfg.max_datagram == LAN.max_datagram - SEAL_OVERHEAD
    n.receive(b.seal(alive_b()), B, 0.0)
    assert joined(n) == [("member-join", "b")]
    n.handle_timers(0.0)
    out = n.take_outgoing()
    assert out and all(data[:1] == b"\x02" for data, _ in out)
    assert all(len(data) <= LAN.max_datagram for data, _ in out)
    assert [wire.decode(b.open(data).body).sender for data, _ in out] == ["a"] * len(out)
    assert n.stats["bytes_out"] == sum(len(d) for d, _ in out)


def test_a_sealed_node_drops_plaintext_and_a_replay_before_anything_changes() -> None:
    b = sealer(2)
    n = node(sealer=sealer(1))
    n.receive(alive_b(), B, 0.0)
    assert joined(n) == [] and n.stats["plaintext_refused"] == 1 and "b" not in n.table.members
    sealed = b.seal(alive_b())
    n.receive(sealed, B, 0.0)
    assert joined(n) == [("member-join", "b")]
    beat = b.seal(wire.encode([wire.Heartbeat(inc=5)], "b"))
    n.receive(beat, B, 1.0)
    assert n.table.members["b"].last_heard == 1.0
    n.receive(beat, B, 5.0)  # the same datagram again, later
    n.receive(sealed, B, 5.0)
    assert n.stats["replayed"] == 2 and n.stats["replayed_duplicate"] == 2
    assert n.table.members["b"].last_heard == 1.0  # the replay refreshed nothing


def test_a_sealed_node_refuses_another_label() -> None:
    n = node(sealer=sealer(1, label="prod"))
    n.receive(sealer(2, label="staging").seal(alive_b()), B, 0.0)
    assert n.stats["decrypt_failed"] == 1 and "b" not in n.table.members


def test_a_node_that_only_seals_outgoing_still_accepts_plaintext() -> None:
    s = sealer(1)
    s.incoming = False  # the first step of a rolling move from plaintext
    n = node(sealer=s)
    n.receive(alive_b(), B, 0.0)
    assert joined(n) == [("member-join", "b")] and n.stats["plaintext_accepted"] == 1


def test_a_plaintext_node_counts_a_sealed_datagram_as_an_unsupported_version() -> None:
    n = node()
    n.receive(sealer(2).seal(alive_b()), B, 0.0)
    assert n.stats["malformed_version"] == 1 and "b" not in n.table.members
    n.receive(alive_b(), B, 0.0)
    assert joined(n) == [("member-join", "b")]
    n.handle_timers(0.0)
    assert all(data[:1] == b"{" for data, _ in n.take_outgoing())


def test_mutated_and_random_datagrams_never_raise_and_never_get_in() -> None:
    """Seeded mutations of a valid sealed datagram (flipped bytes, cuts, extensions) and
    random bytes: every one is refused and counted, none raises, the deadline stays ahead."""
    rng = random.Random(42)
    b = sealer(2)
    n = node(sealer=sealer(1))
    good = b.seal(alive_b())
    tried = 0
    for i in range(3000):
        data = bytearray(good)
        kind = i % 4
        if kind == 0:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data = data[: rng.randrange(len(data))]
        elif kind == 2:
            data += rng.randbytes(rng.randint(1, 64))
        else:
            data = bytearray(b"\x02" + rng.randbytes(rng.randint(0, 200)))
        if bytes(data) == good:
            continue
        tried += 1
        n.receive(bytes(data), B, 0.001 * i)
        n.handle_timers(0.001 * i)
        assert n.next_deadline() >= 0.001 * i
    assert "b" not in n.table.members and joined(n) == []
    assert n.stats["decrypt_failed"] == tried
