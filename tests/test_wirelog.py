"""chatterd.wirelog: the lines RUST_LOG=debug (gossip, per message) and trace (every datagram)
add, in-process; and that at the default level there are none to build (``on`` is False)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from chatterd import keyfile, logs
from chatterd.core import wire
from chatterd.core.config import LAN
from chatterd.core.seal import Sealer
from chatterd.wirelog import WireLog

PEER = ("127.0.0.1", 8081)
RUMOR = wire.Rumor(id="ab" * 16, origin="n2", ts=1, lt=1, hops=2, payload={"x": {"y": 1}})
SUSPECT = wire.Suspect(node="n3", inc=7, by="n2")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
    logging.getLogger().handlers[:] = []
    logs._active = None


def wirelog(spec: str, sealer: Sealer | None = None) -> tuple[WireLog, io.StringIO]:
    out = io.StringIO()
    logs.setup(spec=spec, fmt="json", stream=out)
    return WireLog("n1", LAN, lambda: sealer), out


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize(
    ("spec", "gossip", "datagrams"),
    [
        ("info", False, False),
        ("warn,chatterd.membership=debug", False, False),
        ("debug", True, False),
        ("chatterd.gossip=debug", True, False),
        ("warn,chatterd=debug", True, False),
        ("chatterd::wire=trace", False, True),
        ("trace", True, True),
        ("trace,chatterd.wire=info,chatterd.gossip=info", False, False),
    ],
)
def test_which_lines_are_on_is_decided_once_from_the_filter(spec: str, gossip: bool, datagrams: bool) -> None:
    log, _ = wirelog(spec)
    assert (log.gossip, log.datagrams, log.on) == (gossip, datagrams, gossip or datagrams)


def test_before_logging_is_set_up_there_are_no_lines() -> None:
    logs._active = None
    assert not WireLog("n1", LAN, lambda: None).on


def test_debug_logs_each_message_of_gossip_with_its_kind_id_and_peer() -> None:
    log, out = wirelog("debug")
    log.received(wire.encode([wire.Heartbeat(inc=1), RUMOR, SUSPECT], "n2"), PEER)
    log.sent(wire.encode([wire.Alive(node="n1", id="i", addr="127.0.0.1:8080", inc=9)], "n1"), PEER)
    got = [(e["event"], e["kind"], e.get("id"), e.get("node"), e["peer"], e["level"]) for e in lines(out)]
    assert got == [  # no line for the heartbeat: upkeep shows at trace only
        ("gossip_received", "rumor", RUMOR.id, None, "127.0.0.1:8081", "debug"),
        ("gossip_received", "suspect", None, "n3", "127.0.0.1:8081", "debug"),
        ("gossip_sent", "alive", None, "n1", "127.0.0.1:8081", "debug"),
    ]
    rumor, suspect, alive = lines(out)
    assert (rumor["origin"], rumor["hops"], suspect["inc"], suspect["by"], alive["inc"]) == ("n2", 2, 7, "n2", 9)
    assert {e["logger"] for e in lines(out)} == {"chatterd.gossip"} and all(e["at"] == "n1" for e in lines(out))


def test_trace_logs_every_datagram_even_one_that_does_not_decode() -> None:
    log, out = wirelog("chatterd.wire=trace")
    hb = wire.encode([wire.Heartbeat(inc=1)], "n2")
    log.received(hb, PEER)
    log.received(b"not json", PEER)
    log.sent(wire.encode([RUMOR, SUSPECT], "n1"), PEER)
    got = lines(out)
    assert [(e["event"], e["level"], e["dir"], e["bytes"], e.get("kinds")) for e in got] == [
        ("datagram", "trace", "in", len(hb), ["hb"]),
        ("datagram", "trace", "in", 8, None),
        ("datagram", "trace", "out", len(wire.encode([RUMOR, SUSPECT], "n1")), ["rumor", "suspect"]),
    ]
    assert got[0]["sender"] == "n2" and got[0]["sealed"] is False and got[0]["peer"] == "127.0.0.1:8081"
    assert "undecodable" in got[1] and "undecodable" not in got[0]


def test_sealed_datagrams_are_opened_for_their_lines() -> None:
    ring, _ = keyfile.load_keyring(keyfile.generate_key(), None)
    assert ring is not None
    ours = keyfile.make_sealer(ring, "lab", 1)
    log, out = wirelog("trace", ours)
    sealed = ours.seal(wire.encode([RUMOR], "n2"))
    log.received(sealed, PEER)
    other, _ = keyfile.load_keyring(keyfile.generate_key(), None)
    assert other is not None
    log.received(keyfile.make_sealer(other, "lab", 1).seal(wire.encode([RUMOR], "n9")), PEER)
    trace_in, gossip_in, foreign = lines(out)
    assert trace_in["sealed"] is True and trace_in["kinds"] == ["rumor"] and trace_in["bytes"] == len(sealed)
    assert gossip_in["kind"] == "rumor" and gossip_in["id"] == RUMOR.id
    assert "kinds" not in foreign and "sender" not in foreign
    assert "does not open" in foreign["undecodable"]
    # Opening for the log keeps no state: the core's replay window still takes the datagram.
    assert ours.accept("n2", ours.open(sealed)) is None


def test_trace_lines_render_on_a_console_too() -> None:
    out = io.StringIO()
    logs.setup(spec="trace", fmt="console", stream=out)
    WireLog("n1", LAN, lambda: None).received(wire.encode([wire.Heartbeat(inc=1)], "n2"), PEER)
    text = out.getvalue()
    assert "datagram" in text and "trace" in text and "kinds=['hb']" in text, text


def test_a_failure_to_describe_a_datagram_is_said_a_few_times_and_never_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    log, out = wirelog("trace")

    def broken(msg: wire.Message) -> str:
        raise RuntimeError("bug")

    monkeypatch.setattr("chatterd.wirelog.kind_of", broken)
    for _ in range(50):
        log.received(wire.encode([wire.Heartbeat(inc=1)], "n2"), PEER)
    said = [e for e in lines(out) if e["event"] == "wirelog_failed"]
    assert log.failures == 50 and len(said) == 10 and said[0]["level"] == "error"
