"""IPv6: a cluster on [::1] (join, inject, members, kill -9), and a node listening on [::]
(dual stack) in a cluster of IPv4 nodes: it takes their IPv4 datagrams, and knows them, and
is known, by their plain IPv4 addresses."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from e2e_helpers import FAILURE_TIMEOUT, inject, run_cli, wait_until

from chatterd.testing import free_port as shared_free_port

pytestmark = pytest.mark.e2e


def free_port(family: socket.AddressFamily, host: str) -> int:
    return shared_free_port(host, family)


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class Nodes:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, listen: str, http: str, *args: str) -> None:
        log = open(self.log_dir / f"{name}.log", "wb")
        argv = [sys.executable, "-m", "chatterd", "--listen", listen, "--http", http, "--name", name]
        self.procs[name] = subprocess.Popen(
            [*argv, "--profile", "local", "--log-format", "json", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


@contextlib.asynccontextmanager
async def nodes(tmp: Path) -> AsyncIterator[Nodes]:
    n = Nodes(tmp)
    try:
        yield n
    finally:
        for name in n.procs:
            n.kill(name)


async def members(client: httpx.AsyncClient, url: str) -> dict[str, dict[str, Any]]:
    try:
        rows = (await client.get(url + "/v1/members")).json()
    except (httpx.HTTPError, ValueError):
        return {}
    return {m["name"]: m for m in rows}


async def formed(client: httpx.AsyncClient, urls: list[str], names: list[str]) -> bool:
    """Every node at ``urls`` sees exactly ``names``, all alive."""
    for url in urls:
        view = await members(client, url)
        if sorted(view) != names or {m["state"] for m in view.values()} != {"alive"}:
            return False
    return True


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
async def test_a_cluster_on_ipv6_loopback(tmp_path: Path) -> None:
    ports = [free_port(socket.AF_INET6, "::1") for _ in range(3)]
    addrs = [f"[::1]:{p}" for p in ports]
    urls = [f"http://[::1]:{p}" for p in ports]
    async with nodes(tmp_path) as n, httpx.AsyncClient(timeout=2.0) as client:
        for i, addr in enumerate(addrs):
            n.start(f"v{i}", addr, addr, *(["--join", addrs[0]] if i else []))

        await wait_until(lambda: formed(client, urls, ["v0", "v1", "v2"]), 20, "the IPv6 cluster to form")
        view = await members(client, urls[0])
        assert {m["addr"] for m in view.values()} == set(addrs)
        res = await inject(addrs[1], {"over": {"ipv6": True}})
        assert res.returncode == 0, str(res)
        res = await run_cli("chatterd", "members", "--http", addrs[2])
        assert res.returncode == 0 and addrs[0] in res.stdout, str(res)
        n.kill("v2")

        async def dead() -> bool:
            states = [(await members(client, url)).get("v2", {}).get("state") for url in urls[:2]]
            return states == ["dead", "dead"]

        await wait_until(dead, FAILURE_TIMEOUT, "v2 dead on v0 and v1")


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
async def test_a_dual_stack_node_among_ipv4_nodes(tmp_path: Path) -> None:
    p4 = [free_port(socket.AF_INET, "127.0.0.1") for _ in range(2)]
    p6 = free_port(socket.AF_INET6, "::1")
    seed = f"127.0.0.1:{p4[0]}"
    async with nodes(tmp_path) as n, httpx.AsyncClient(timeout=2.0) as client:
        n.start("a", seed, seed)
        n.start("b", f"127.0.0.1:{p4[1]}", f"127.0.0.1:{p4[1]}", "--join", seed)
        n.start("dual", f"[::]:{p6}", f"[::1]:{p6}", "--join", seed)
        urls = [f"http://{seed}", f"http://127.0.0.1:{p4[1]}", f"http://[::1]:{p6}"]

        await wait_until(lambda: formed(client, urls, ["a", "b", "dual"]), 20, "the mixed cluster to form")
        view = await members(client, urls[2])
        # The wildcard node advertises the address that routes to its IPv4 seed, and knows the
        # others by plain IPv4 addresses (not ::ffff:127.0.0.1).
        assert view["dual"]["addr"] == f"127.0.0.1:{p6}"
        assert view["a"]["addr"] == seed and view["b"]["addr"] == f"127.0.0.1:{p4[1]}"
        await trio.sleep(2)  # heartbeats both ways for a while: no one suspected
        for url in urls:
            assert (await members(client, url))["dual"]["state"] == "alive", url
