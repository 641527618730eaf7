"""POST /v1/join's body, hostile or not, and the core's knock."""

from __future__ import annotations

import random

import pytest

from chatterd.core import wire
from chatterd.core.config import LAN
from chatterd.core.node import Node
from chatterd.joinops import JOIN_TIMEOUT, MAX_JOIN_ADDRS, parse_body


def test_a_good_body_parses_with_the_default_timeout() -> None:
    seeds, timeout = parse_body({"addrs": ["127.0.0.1:7401", "dns+chatter.example:2428"]})
    assert [(s.kind, s.host, s.port) for s in seeds] == [("addr", "127.0.0.1", 7401), ("dns", "chatter.example", 2428)]
    assert timeout == JOIN_TIMEOUT


@pytest.mark.parametrize(
    "body",
    [
        [],
        "127.0.0.1:1",
        {},
        {"addrs": []},
        {"addrs": "127.0.0.1:1"},
        {"addrs": ["127.0.0.1:1"] * (MAX_JOIN_ADDRS + 1)},
        {"addrs": [7]},
        {"addrs": ["x" * 400 + ":1"]},
        {"addrs": ["127.0.0.1:0"]},
        {"addrs": ["no port"]},
        {"addrs": ["127.0.0.1:1"], "timeout": 0},
        {"addrs": ["127.0.0.1:1"], "timeout": 1e9},
        {"addrs": ["127.0.0.1:1"], "timeout": True},
        {"addrs": ["127.0.0.1:1"], "timeout": float("nan")},
        {"addrs": ["127.0.0.1:1"], "extra": 1},
    ],
)
def test_a_bad_body_is_refused_with_a_reason(body: object) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_body(body)


def test_knock_sends_our_join_to_each_address_but_ours() -> None:
    me = ("10.0.0.1", 1)
    n = Node(LAN, "a", me, seeds=[], now=0.0, wall_offset=1_800_000_000.0, rng=random.Random(7))
    n.handle_timers(0.0)
    n.take_outgoing()
    assert n.sync.knock([("10.0.0.2", 2), me, ("10.0.0.3", 3)]) == 2
    out = n.take_outgoing()
    assert [addr for _, addr in out] == [("10.0.0.2", 2), ("10.0.0.3", 3)]
    for data, _ in out:
        (msg,) = wire.decode(data, LAN.max_receive, LAN.max_payload_depth).m
        assert isinstance(msg, wire.Join) and msg.node == "a"
    assert n.sync.seeds == []  # a restart joins through --join as before
