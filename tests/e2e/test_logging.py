"""The log filter: CHATTER_LOG, or RUST_LOG when CHATTER_LOG is unset (chatter-rs users' habit)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio
from e2e_helpers import DELIVERY_TIMEOUT, base_env, inject, spawn_chatterd, wait_until

from chatterd.testing import HOST, free_port

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("env", "verbose"),
    [
        pytest.param({"RUST_LOG": "warn"}, False, id="RUST_LOG=warn"),
        pytest.param({"RUST_LOG": "debug"}, True, id="RUST_LOG=debug"),
        pytest.param({"CHATTER_LOG": "debug"}, True, id="CHATTER_LOG=debug"),
        pytest.param({"CHATTER_LOG": "debug", "RUST_LOG": "warn"}, True, id="CHATTER_LOG=debug-wins-over-RUST_LOG"),
        pytest.param({"CHATTER_LOG": "warn", "RUST_LOG": "debug"}, False, id="CHATTER_LOG=warn-wins-over-RUST_LOG"),
    ],
)
async def test_log_level_from_environment(tmp_path: Path, env: dict[str, str], verbose: bool) -> None:
    port = free_port()
    async with spawn_chatterd(port, tmp_path / "node.log", base_env(**env), ("--name", "solo")) as d:
        await d.wait_healthy()
        # Things that log below warning: a dropped datagram (debug, chatterd.wire) and a
        # delivered DebugMessage (info, chatterd.events).
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"not json", (HOST, port))
        res = await inject(d.addr, '{"DebugMessage":{"text":"log me"}}')
        assert res.returncode == 0, str(res)

        if verbose:
            want = {("debug", "datagram_dropped"), ("info", "started"), ("info", "debug_message")}

            async def logged() -> bool:
                return want <= {(e.get("level"), e.get("event")) for e in d.log_lines()}

            await wait_until(logged, DELIVERY_TIMEOUT, f"log lines {want} in {d.log_path}")
        else:
            await trio.sleep(1.0)  # running for a while, handling traffic
            assert d.proc.poll() is None, f"chatterd exited; see {d.log_path}"
            noisy = [e for e in d.log_lines() if e.get("level") not in ("warning", "error", "critical")]
            assert noisy == [], f"lines below warn with {env}: {noisy}"
