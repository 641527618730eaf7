"""chatter-inject on the first try: nothing listening fails at once, ``--no-wait`` prints the
id it sent, a terminal on stdin is told what chatter-inject waits for, ``--help`` shows
payloads and exit statuses."""

from __future__ import annotations

import os
import pty
import sys
import time
from pathlib import Path

import pytest
import trio
from e2e_helpers import DELIVERY_TIMEOUT, inject, run_cli, wait_until

from chatter_inject.client import NotListening
from chatter_inject.client import inject as inject_call
from chatterd.testing import HOST, free_port, local_cluster

pytestmark = pytest.mark.e2e

EXIT_FAILED = 1


async def test_nothing_listening_fails_at_once_not_after_the_timeout() -> None:
    addr = f"{HOST}:{free_port()}"
    t0 = time.monotonic()
    res = await inject(addr, '{"DebugMessage":{"text":"hi"}}', "--timeout", "20")
    took = time.monotonic() - t0
    assert res.returncode == EXIT_FAILED and res.stdout == "", str(res)
    assert res.stderr.splitlines() == [f"chatter-inject: nothing listens on {addr} (ICMP port unreachable)"], str(res)
    assert took < 10, f"took {took:.1f} s: it waited for the timeout (20 s)"


def test_the_library_fails_at_once_too() -> None:
    t0 = time.monotonic()
    with pytest.raises(NotListening, match="nothing listens"):
        inject_call((HOST, free_port()), {"x": {"y": 1}}, timeout=20)
    assert time.monotonic() - t0 < 10


async def test_no_wait_prints_the_id_of_the_message_it_sent(tmp_path: Path) -> None:
    async with local_cluster(1, log_dir=tmp_path) as cluster:
        (n0,) = cluster.nodes
        res = await inject(n0.addr, {"no-wait": {"n": 2}}, "--no-wait")
        assert res.returncode == 0 and res.stderr == "", str(res)
        (mid,) = res.stdout.split()
        assert len(mid) == 32 and all(c in "0123456789abcdef" for c in mid), str(res)

        async def delivered_under_that_id() -> bool:
            return any(e["id"] == mid and e["payload"] == {"no-wait": {"n": 2}} for e in await n0.events())

        await wait_until(delivered_under_that_id, DELIVERY_TIMEOUT, f"message {mid} in {n0.name}'s events")


async def test_on_a_terminal_it_says_it_reads_stdin() -> None:
    """No JSON argument and a terminal on stdin: a hint on stderr first, then it reads."""
    master, slave = pty.openpty()
    try:
        # Typed ahead: the message, then Ctrl-D (end of input on a terminal).
        os.write(master, b'{"DebugMessage":{"text":"typed"}}\n\x04')
        argv = [sys.executable, "-m", "chatter_inject", f"{HOST}:{free_port()}"]
        with trio.fail_after(30):
            proc = await trio.run_process(argv, stdin=slave, capture_stdout=True, capture_stderr=True, check=False)
    finally:
        os.close(slave)
        os.close(master)
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 2 and "reading the message (JSON) from stdin" in lines[0] and "Ctrl-D" in lines[0], lines
    assert "nothing listens" in lines[1], lines  # it read the message and sent it
    assert proc.returncode == EXIT_FAILED


async def test_not_on_a_terminal_there_is_no_hint() -> None:
    res = await inject(f"{HOST}:{free_port()}", stdin=b'{"DebugMessage":{"text":"piped"}}')
    assert res.returncode == EXIT_FAILED and len(res.stderr.splitlines()) == 1, str(res)
    assert "nothing listens" in res.stderr, str(res)


async def test_help_shows_payload_examples_and_exit_statuses() -> None:
    res = await run_cli("chatter_inject", "--help")
    assert res.returncode == 0 and res.stderr == "", str(res)
    out = res.stdout
    for text in ('{"DebugMessage":{"text":"hello world"}}', '"DeviceAdded"', '"ViewGossip"', "exit status:"):
        assert text in out, f"{text} missing from chatter-inject --help"
    statuses = [line.split()[0] for line in out.split("exit status:")[1].splitlines() if line[:3].strip().isdigit()]
    assert statuses == ["0", "1", "2"], out
