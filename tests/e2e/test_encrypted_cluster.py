"""An encrypted cluster of real chatterd processes (--encrypt): it joins, delivers, detects
and leaves as a plaintext one does; a node with another key cannot join; chatter-inject
without the key fails clearly; a replayed datagram is refused."""

from __future__ import annotations

import signal
import socket
import time

import pytest
import trio
from e2e_helpers import FAILURE_TIMEOUT, counters, inject, wait_delivered, wait_until

from chatter_inject.client import inject as inject_call
from chatter_inject.client import request as inject_request
from chatter_inject.client import sealer_for
from chatterd.core import wire
from chatterd.testing import LocalCluster, local_cluster

pytestmark = pytest.mark.e2e

KEY = "3ELWUulQ41HA5AFaA9xXsD/8T7uIbcGtwxLDLdRffj4="
OTHER = "q6rvbuwKdBvEo8Dqk4WOpVHMQJZn1Gz3ZrNr2Uw6C1s="
ARGS = ["--profile", "local", "--encrypt", KEY, "--label", "e2e"]


async def states(cluster: LocalCluster, observer: str) -> dict[str, str]:
    return await cluster.states(cluster.node(observer))


async def test_an_encrypted_cluster_joins_delivers_detects_and_leaves() -> None:
    async with local_cluster(3, ARGS) as cluster:
        n0, n1, n2 = cluster.nodes
        health = await n0.get("/v1/health")
        assert health["encryption"] == "on" and health["warnings"] == [] and health["status"] == "ok"
        res = await inject(n1.addr, {"deploy": {"v": 1}}, "--encrypt", KEY, "--label", "e2e")
        assert res.returncode == 0, str(res)
        mid = res.stdout.split()[0]
        await wait_delivered(cluster.nodes, [mid])
        n2.kill(signal.SIGKILL)
        await cluster.wait_state("n2", "dead", timeout=FAILURE_TIMEOUT)
        n1.kill(signal.SIGTERM)
        assert await n1.wait_exit() == 0
        await wait_until(lambda: _is(cluster, "n0", "n1", "left"), FAILURE_TIMEOUT, "n1 left, seen by n0")
        c = await counters(n0)
        assert c.get("decrypt_failed", 0) == 0 and c.get("replayed", 0) == 0


async def _is(cluster: LocalCluster, observer: str, name: str, state: str) -> bool:
    return (await states(cluster, observer)).get(name) == state


async def test_a_node_with_another_key_or_label_cannot_join() -> None:
    async with local_cluster(2, ARGS) as cluster:
        cluster.add("intruder", args=["--encrypt", OTHER])
        cluster.add("other-label", args=["--label", "elsewhere"])
        await trio.sleep(3.0)  # six join retries in the local profile
        for name in ("n0", "n1"):
            assert set(await states(cluster, name)) == {"n0", "n1"}
        for name in ("intruder", "other-label"):
            assert set(await states(cluster, name)) == {name}
        c = await counters(cluster.node("n0"))
        assert c["decrypt_failed_unknown_key"] > 0 and c["decrypt_failed_auth"] > 0


async def test_chatter_inject_without_the_key_fails_clearly_and_a_replay_is_refused() -> None:
    async with local_cluster(1, ARGS) as cluster:
        (n0,) = cluster.nodes
        t0 = time.monotonic()
        res = await inject(n0.addr, {"x": {"a": 1}}, "--timeout", "1")
        assert time.monotonic() - t0 < 10
        assert res.returncode == 1 and res.stdout == "", str(res)
        assert len(res.stderr.splitlines()) == 1 and "may require a key: --encrypt" in res.stderr, str(res)
        assert (await counters(n0))["plaintext_refused"] >= 1

        sealer = sealer_for(KEY, label="e2e")
        assert sealer is not None
        _, request = inject_request({"y": {"b": 2}})  # padded: a stranger gets back no more than it sent
        sealed = sealer.seal(request)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2.0)
            host, port = wire.parse_addr(n0.addr)
            sock.sendto(sealed, (host, port))
            ack = wire.decode(sealer.open(sock.recv(65536)).body).m[0]
            assert isinstance(ack, wire.InjectAck)
            sock.sendto(sealed, (host, port))  # the same datagram again: refused, not acknowledged
            sock.settimeout(0.5)
            with pytest.raises(TimeoutError):
                sock.recv(65536)
        c = await counters(n0)
        assert c["replayed"] == 1 and c["replayed_duplicate"] == 1

        addr = wire.parse_addr(n0.addr)
        mid, name = await trio.to_thread.run_sync(lambda: inject_call(addr, {"z": {"c": 3}}, encrypt=KEY, label="e2e"))
        assert name == "n0" and len(mid) == 32
        with pytest.raises(TimeoutError, match="may use another key or --label"):
            await trio.to_thread.run_sync(lambda: inject_call(addr, {"z": {"c": 4}}, encrypt=OTHER, timeout=0.5))
