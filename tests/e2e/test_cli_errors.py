"""The command-line tools' failure modes: one line on stderr, a non-zero exit status, quickly."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import trio
from e2e_helpers import (
    DELIVERY_TIMEOUT,
    Completed,
    base_env,
    inject,
    inject_ok,
    run_cli,
    spawn_chatterd,
    wait_delivered,
    wait_until,
)

from chatterd.testing import HOST, free_port, local_cluster

pytestmark = pytest.mark.e2e

EXIT_USAGE = 2  # bad arguments or bad message: nothing was sent
EXIT_FAILED = 1  # sent, but not acknowledged

# Every chatter-inject case here fails before sending anything, so the address need not be live.
ANY_ADDR = f"{HOST}:9"
# Valid JSON, but a payload nested 34 levels deep (the limit is 32).
TOO_DEEP = '{"a":' + "[" * 33 + "]" * 33 + "}"


def assert_one_line_error(res: Completed, code: int, prog: str) -> str:
    assert res.returncode == code, str(res)
    assert res.stdout == "", str(res)
    lines = res.stderr.splitlines()
    assert len(lines) == 1, str(res)
    assert res.stderr.endswith("\n"), str(res)
    assert lines[0].startswith(f"{prog}:"), str(res)
    assert "Traceback" not in res.stderr, str(res)
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "stdin", "mentions"),
    [
        pytest.param(["not an address", "{}"], None, "address", id="unparsable-address"),
        pytest.param(["127.0.0.1:99999", '{"a":1}'], None, "port", id="port-out-of-range"),
        pytest.param([ANY_ADDR, '{"DebugMessage":{"text":"hi"}'], None, "invalid JSON", id="invalid-json"),
        pytest.param([ANY_ADDR], b"", "invalid JSON", id="empty-stdin"),
        pytest.param([ANY_ADDR, "[" * 100_000], None, "invalid JSON", id="json-nested-too-deeply-to-parse"),
        pytest.param([ANY_ADDR, TOO_DEEP], None, "nesting", id="payload-nested-deeper-than-32"),
        pytest.param([ANY_ADDR, "[1, 2]"], None, "object", id="not-an-object"),
        pytest.param([ANY_ADDR, '{"DebugMessage":{}}'], None, "text", id="missing-field"),
        pytest.param([ANY_ADDR, '{"DebugMessage":{"text":5}}'], None, "text", id="mistyped-field"),
        pytest.param(
            [ANY_ADDR, '{"DeviceGossip":{"DeviceAdded":{"origin":"not-a-uuid","name":"g","description":""}}}'],
            None,
            "UUID",
            id="bad-uuid",
        ),
        pytest.param(
            [ANY_ADDR, json.dumps({"DebugMessage": {"text": "x" * 5000}})], None, "too large", id="over-size-limit"
        ),
        pytest.param([ANY_ADDR, '{"a":1}', "--hops", "-1"], None, "hops", id="negative-hops"),
        pytest.param([ANY_ADDR, '{"a":1}', "--timeout", "soon"], None, "timeout", id="bad-option-value"),
        pytest.param([], None, "ADDR", id="no-arguments"),
    ],
)
async def test_inject_rejects_bad_usage(argv: list[str], stdin: bytes | None, mentions: str) -> None:
    with trio.fail_after(15):
        res = await run_cli("chatter_inject", *argv, stdin=stdin)
    line = assert_one_line_error(res, EXIT_USAGE, "chatter-inject")
    assert mentions in line, line


async def test_inject_without_acknowledgement_fails() -> None:
    # Nothing at all on the port: ICMP port unreachable, at once (tests/e2e/test_inject_cli.py).
    with trio.fail_after(15):
        res = await inject(f"{HOST}:{free_port()}", '{"DebugMessage":{"text":"hi"}}', "--timeout", "1")
    line = assert_one_line_error(res, EXIT_FAILED, "chatter-inject")
    assert "nothing listens" in line, line

    # Something that receives but never answers.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.bind((HOST, 0))
        with trio.fail_after(15):
            res = await inject(f"{HOST}:{mute.getsockname()[1]}", '{"a":1}', "--timeout", "1")
        line = assert_one_line_error(res, EXIT_FAILED, "chatter-inject")
        assert "no acknowledgement" in line, line
        mute.setblocking(False)
        assert mute.recv(65536), "chatter-inject sent nothing"


async def test_inject_no_wait_to_a_live_node(tmp_path: Path) -> None:
    async with local_cluster(1, log_dir=tmp_path) as cluster:
        (n0,) = cluster.nodes
        res = await inject(n0.addr, {"no-wait": {"n": 1}}, "--no-wait")
        assert res.returncode == 0, str(res)
        assert len(res.stdout.split()) == 1 and res.stderr == "", str(res)  # the message id

        # One datagram, sent once: it normally arrives on loopback; if it did not, say so clearly.
        async def arrived() -> bool:
            return any(e["payload"] == {"no-wait": {"n": 1}} for e in await n0.events())

        await wait_until(arrived, DELIVERY_TIMEOUT, "the --no-wait message to be delivered")


async def test_inject_rejected_by_the_node_exits_1(tmp_path: Path) -> None:
    """A message that passes chatter-inject's own checks but not the node's: a nack, exit 1."""
    async with local_cluster(1, log_dir=tmp_path, extra_args=["--max-datagram", "600"]) as cluster:
        (n0,) = cluster.nodes
        res = await inject(n0.addr, {"DebugMessage": {"text": "x" * 1000}})
        line = assert_one_line_error(res, EXIT_FAILED, "chatter-inject")
        assert "rejected" in line, line
        mid = await inject_ok(n0, {"DebugMessage": {"text": "small"}})
        await wait_delivered([n0], [mid])


@pytest.mark.parametrize(
    "listen",
    ["nope", "127.0.0.1:99999", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:-5"],
)
async def test_chatterd_bad_listen_address(listen: str) -> None:
    with trio.fail_after(15):  # "quickly": it must not hang
        res = await run_cli("chatterd", "--listen", listen)
    assert res.returncode != 0, str(res)
    assert_one_line_error(res, res.returncode, "chatterd")


async def test_chatterd_udp_port_in_use() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((HOST, 0))
        port = taken.getsockname()[1]
        with trio.fail_after(15):
            res = await run_cli("chatterd", "--listen", f"{HOST}:{port}")
    assert res.returncode == 1, str(res)
    line = assert_one_line_error(res, 1, "chatterd")
    assert "in use" in line, line


@pytest.mark.parametrize("own_port", [False, True], ids=["http-at-the-listen-port", "http-own-port"])
async def test_chatterd_http_port_in_use(own_port: bool) -> None:
    """The API listens on TCP at the --listen port by default (or at --http); that port being
    taken is as fatal, and as short: one line at the default log level, as for UDP."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = (
            ["--listen", f"{HOST}:{free_port()}", "--http", f"{HOST}:{port}"]
            if own_port
            else ["--listen", f"{HOST}:{port}"]
        )
        with trio.fail_after(15):
            res = await run_cli("chatterd", *args, env=base_env(CHATTER_LOG="info"))
    assert res.returncode == 1, str(res)
    line = assert_one_line_error(res, 1, "chatterd")
    assert line == f"chatterd: error: cannot serve HTTP on {HOST}:{port}: Address already in use", line


async def test_chatterd_help() -> None:
    res = await run_cli("chatterd", "--help")
    assert res.returncode == 0, str(res)
    assert res.stderr == "", str(res)
    for word in ("--join", "--listen", "CHATTER_LOG"):
        assert word in res.stdout, f"{word} missing from chatterd --help"


async def test_chatter_inject_help() -> None:
    res = await run_cli("chatter_inject", "--help")
    assert res.returncode == 0, str(res)
    for word in ("ADDR", "--no-wait", "--timeout"):
        assert word in res.stdout, f"{word} missing from chatter-inject --help"


async def test_chatterd_bad_log_filter_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    port = free_port()
    async with spawn_chatterd(port, tmp_path / "d.log", base_env(CHATTER_LOG="loud")) as d:
        await d.wait_healthy()
        warnings = [line for line in d.log_lines() if line.get("event") == "bad_log_filter"]
        assert len(warnings) == 1 and warnings[0]["level"] == "warning", d.log_lines()
