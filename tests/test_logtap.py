"""chatterd.logtap: a monitor sees debug lines while the node logs at info (and the node's own
output does not get them), nothing is rendered for monitors when there are none, a slow
monitor loses lines (counted) instead of growing, and a line from a worker thread wakes it."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator

import pytest
import structlog
import trio

from chatterd import logs, logtap


class _Stream(io.StringIO):
    def isatty(self) -> bool:
        return False


@pytest.fixture
def node_logs() -> Iterator[_Stream]:
    """logs.setup at info into a buffer; structlog's test config back afterwards."""
    saved = structlog.get_config()
    stream = _Stream()
    logs.setup(spec="info", fmt="json", stream=stream)
    try:
        yield stream
    finally:
        structlog.reset_defaults()
        structlog.configure(**saved)
        logtap.GATE.node, logtap.GATE.monitored = 0, logtap.OFF
        logtap.GATE.update()


async def test_monitor_at_debug_under_a_node_at_info(node_logs: _Stream) -> None:
    log = structlog.get_logger("chatterd.wire").bind(at="n1")  # bound before the monitor: as the core's
    before = logtap.TAP.lines
    log.debug("datagram_dropped", reason="malformed")
    assert logtap.TAP.lines == before and logtap.GATE.threshold == 20  # nobody monitors: not even rendered
    with logtap.TAP.subscribe(logtap.LEVELS["debug"], trio.lowlevel.current_trio_token()) as sub:
        assert logtap.GATE.threshold == 10
        log.debug("datagram_dropped", reason="malformed", src="10.0.0.1:9")
        log.info("member_failed", node="n3")
        with trio.fail_after(5):
            await sub.wait()
        rows = [json.loads(line) for line in sub.take()]
    assert [(r["level"], r["logger"], r["event"]) for r in rows] == [
        ("debug", "chatterd.wire", "datagram_dropped"),
        ("info", "chatterd.wire", "member_failed"),
    ]
    assert rows[0]["src"] == "10.0.0.1:9" and rows[0]["at"] == "n1" and rows[0]["timestamp"].endswith("Z")
    out = node_logs.getvalue()
    assert "member_failed" in out and "datagram_dropped" not in out  # the node's own level holds
    assert logtap.GATE.threshold == 20  # the monitor is gone: back to the node's level


async def test_a_monitor_at_warn_gets_no_info(node_logs: _Stream) -> None:
    log = structlog.get_logger("chatterd.runtime")
    with logtap.TAP.subscribe(logtap.LEVELS["warn"], trio.lowlevel.current_trio_token()) as sub:
        log.info("started")
        log.warning("state_unusable", error="x")
        with trio.fail_after(5):
            await sub.wait()
        assert [json.loads(line)["event"] for line in sub.take()] == ["state_unusable"]


async def test_a_slow_monitor_drops_and_is_told(node_logs: _Stream) -> None:
    token = trio.lowlevel.current_trio_token()
    with logtap.TAP.subscribe(logtap.LEVELS["info"], token) as sub:
        for i in range(logtap.MONITOR_BUFFER + 5):
            sub.offer(f'{{"n":{i}}}'.encode())
        lines = sub.take()
    assert len(lines) == logtap.MONITOR_BUFFER + 1
    first = json.loads(lines[0])
    assert first["event"] == "monitor_dropped" and first["dropped"] == 5
    assert json.loads(lines[-1]) == {"n": logtap.MONITOR_BUFFER - 1}


async def test_a_line_from_a_worker_thread_wakes_the_reader(node_logs: _Stream) -> None:
    with logtap.TAP.subscribe(logtap.LEVELS["info"], trio.lowlevel.current_trio_token()) as sub:
        await trio.to_thread.run_sync(lambda: structlog.get_logger("chatterd.runtime").warning("state_save_failed"))
        with trio.fail_after(5):
            await sub.wait()
        assert [json.loads(line)["event"] for line in sub.take()] == ["state_save_failed"]


async def test_at_most_max_monitors(node_logs: _Stream) -> None:
    tap = logtap.LogTap()
    token = trio.lowlevel.current_trio_token()
    with contextlib.ExitStack() as stack:
        for _ in range(logtap.MAX_MONITORS):
            stack.enter_context(tap.subscribe(20, token))
        assert tap.full()
    assert not tap.full()


def test_trace_is_a_level_of_our_loggers() -> None:
    """RUST_LOG=trace shows .trace() lines; at info they cost a comparison and show nothing."""
    saved = structlog.get_config()
    try:
        for spec, shown in (("trace", True), ("info", False)):
            stream = _Stream()
            logs.setup(spec=spec, fmt="json", stream=stream)
            structlog.get_logger("chatterd.wire").trace("datagram_in", size=12)
            assert ('"event":"datagram_in"' in stream.getvalue()) == shown, spec
    finally:
        structlog.reset_defaults()
        structlog.configure(**saved)
        logtap.GATE.node, logtap.GATE.monitored = 0, logtap.OFF
        logtap.GATE.update()
