"""Tags: parsing, the size limit, the wire round trip, and the core's checks."""

import random

import pytest

from chatterd.core import tags, wire
from chatterd.core.config import LAN
from chatterd.core.membership import MemberTable
from chatterd.core.node import Node, check_tags

A = ("127.0.0.1", 1)


def sized(n: int) -> dict[str, str]:
    """One tag encoding to exactly n bytes ({"k":"vvv..."} is 8 bytes plus the value)."""
    t = {"k": "v" * (n - 8)}
    assert tags.encoded_size(t) == n
    return t


@pytest.mark.parametrize(
    ("text", "pair"),
    [
        ("role=db", ("role", "db")),
        ("empty=", ("empty", "")),
        ("url=a=b", ("url", "a=b")),
        ("k=two words", ("k", "two words")),
    ],
)
def test_parse_pair(text: str, pair: tuple[str, str]) -> None:
    assert tags.parse_pair(text) == pair


@pytest.mark.parametrize("text", ["role", "=db", "", "bad key=1", "tab\tkey=1"])
def test_parse_pair_rejects_bad_syntax(text: str) -> None:
    with pytest.raises(tags.TagsError, match="invalid tag"):
        tags.parse_pair(text)


def test_later_pairs_win_and_the_limit_applies_to_the_whole() -> None:
    assert tags.parse_pairs(["a=1", "b=2", "a=3"]) == {"a": "3", "b": "2"}
    half = "v" * 250
    with pytest.raises(tags.TagsError, match="over the 512-byte limit"):
        tags.parse_pairs([f"a={half}", f"b={half}", f"c={half}"])


def test_limit_is_512_encoded_bytes() -> None:
    assert tags.validate(sized(512)) == sized(512)
    with pytest.raises(tags.TagsError, match="513 bytes encoded, over the 512-byte limit"):
        tags.validate(sized(513))
    # Multi-byte characters count by their encoded size.
    assert tags.encoded_size({"k": "é"}) == 10


@pytest.mark.parametrize(
    "bad", [{"": "x"}, {"a=b": "x"}, {"a b": "x"}, {"k": 1}, {1: "x"}], ids=["empty", "eq", "space", "int", "intkey"]
)
def test_validate_rejects_bad_keys_and_values(bad: dict) -> None:
    with pytest.raises(tags.TagsError):
        tags.validate(bad)


def test_update_deletes_then_sets() -> None:
    assert tags.update({"a": "1", "b": "2"}, {"c": "3", "a": "9"}, ["b", "missing"]) == {"a": "9", "c": "3"}
    with pytest.raises(tags.TagsError):
        tags.update({"a": "v" * 400}, {"b": "v" * 200}, [])


def test_wire_round_trip_with_tags_and_empty_tags_omitted() -> None:
    t = {"role": "db", "dc": "east"}
    msgs: list[wire.Message] = [
        wire.Alive(node="a", id="x", addr="127.0.0.1:1", inc=2, tags=t),
        wire.Join(node="a", id="x", addr="127.0.0.1:1", inc=2, tags=t),
        wire.State(members=[wire.MemberRecord(node="a", id="x", addr="h:1", inc=1, state="dead", tags=t)]),
    ]
    assert wire.decode(wire.encode(msgs, sender="n1")).m == msgs
    assert b"tags" not in wire.encode_message(wire.Alive(node="a", id="x", addr="127.0.0.1:1", inc=2))
    assert b"tags" not in wire.encode_message(wire.MemberRecord(node="a", id="x", addr="h:1", inc=1, state="alive"))


@pytest.mark.parametrize(
    "msg",
    [
        '{"type":"alive","node":"a","id":"x","addr":"h:1","inc":1,"tags":%s}',
        '{"type":"join","node":"a","id":"x","addr":"h:1","inc":1,"tags":%s}',
        '{"type":"state","members":[{"node":"a","id":"x","addr":"h:1","inc":1,"state":"alive","tags":%s}]}',
    ],
    ids=["alive", "join", "state"],
)
def test_peers_tags_over_the_limit_or_mistyped_are_rejected(msg: str) -> None:
    for bad, reason in (('{"k":"%s"}' % ("v" * 600), "tags"), ('{"k":1}', "invalid"), ('{"":"x"}', "tags")):
        data = ('{"v":1,"m":[' + msg % bad + "]}").encode()
        with pytest.raises(wire.WireError) as e:
            wire.decode(data)
        assert e.value.reason == reason


def test_tags_change_only_with_a_higher_incarnation() -> None:
    t = MemberTable()
    t.apply_alive("x", "id1", A, 5, 0, {"a": "1"})
    assert t.apply_alive("x", "id1", A, 5, 1, {"a": "2"}) is None  # same incarnation: old news
    assert t.members["x"].tags == {"a": "1"}
    before = t.digest.hashes[:]
    tr = t.apply_alive("x", "id1", A, 6, 1, {"a": "2"})
    assert tr is not None and tr.updated and (tr.old, tr.new) == ("alive", "alive")
    assert t.members["x"].tags == {"a": "2"}
    assert t.digest.hashes != before
    tr = t.apply_alive("x", "id1", A, 7, 1, {"a": "2"})  # a refutation: news, not an update
    assert tr is not None and not tr.updated


def test_node_with_tags_too_big_for_its_datagrams_is_refused() -> None:
    small = LAN.replace(max_datagram=600)
    assert check_tags(LAN, "n1", sized(512)) == sized(512)
    with pytest.raises(tags.TagsError, match="too big for 600-byte datagrams"):
        check_tags(small, "n1", sized(512))
    with pytest.raises(tags.TagsError):
        Node(small, "n1", A, now=0, wall_offset=0, rng=random.Random(1), tags=sized(512))
    node = Node(small, "n1", A, now=0, wall_offset=0, rng=random.Random(1), tags={"a": "1"})
    inc = node.inc
    with pytest.raises(tags.TagsError):
        node.set_tags(sized(512), 1)
    assert node.tags == {"a": "1"} and node.inc == inc  # nothing changed


def test_set_tags_bumps_incarnation_and_gossips_alive_with_tags() -> None:
    node = Node(LAN, "n1", A, now=0, wall_offset=0, rng=random.Random(1))
    node.receive(wire.encode([wire.Alive(node="n2", id="y", addr="127.0.0.1:2", inc=1)], "n2"), ("127.0.0.1", 2), 0)
    node.handle_timers(0)
    node.take_outgoing()
    node.take_events()
    inc = node.inc
    assert node.set_tags({"role": "db"}, 1)
    assert node.inc == inc + 1
    [ev] = node.take_events()
    assert (ev.kind, ev.node, ev.inc, ev.tags) == ("member-update", "n1", inc + 1, {"role": "db"})  # type: ignore[union-attr]
    node.handle_timers(1)
    sent = [wire.decode(d) for d, dest in node.take_outgoing() if dest == ("127.0.0.1", 2)]
    alives = [m for d in sent for m in d.m if isinstance(m, wire.Alive) and m.node == "n1"]
    assert alives and alives[0].tags == {"role": "db"} and alives[0].inc == inc + 1
    node.leave(2)
    with pytest.raises(tags.TagsError, match="leaving"):
        node.set_tags({"role": "web"}, 3)


def test_the_nodes_own_tags_are_not_for_users() -> None:
    tags.check_settable(["dc", "role:db"])
    with pytest.raises(tags.TagsError, match="set by the node itself"):
        tags.check_settable(["dc", "chatter:key"])
