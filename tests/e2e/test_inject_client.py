"""chatter_inject.client: posting messages from Python to a real node."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio

from chatter_inject.client import Rejected, inject
from chatterd.testing import HOST, free_port, local_cluster

pytestmark = pytest.mark.e2e


async def test_inject_returns_the_id_and_the_node_or_why_not(tmp_path: Path) -> None:
    async with local_cluster(1, log_dir=tmp_path) as cluster:
        node = cluster.nodes[0]
        target = (HOST, node.port)
        mid, name = await trio.to_thread.run_sync(lambda: inject(target, {"deploy": {"version": "1"}}))
        assert name == node.name and len(mid) == 32
        rows = await node.events()
        assert [r["id"] for r in rows if r["kind"] == "user"] == [mid]
        bad = {"DeviceGossip": {"DeviceAdded": {"name": "x"}}}  # no origin: chatter-rs's schema refuses it
        with pytest.raises(Rejected, match="origin"):
            await trio.to_thread.run_sync(lambda: inject(target, bad))


def test_inject_to_nobody_times_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, pytest.raises(TimeoutError):
        inject((HOST, free_port()), {"x": {"y": 1}}, timeout=0.5, retry=0.1, sock=sock)
