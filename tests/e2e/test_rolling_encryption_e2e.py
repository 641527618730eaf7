"""Turning encryption on in a running plaintext cluster of real chatterd processes, one node
at a time (serf#292; memberlist's verify-outgoing / verify-incoming): five plaintext nodes,
then three phases of graceful restarts (SIGTERM, then the same --name and --data-dir with the
phase's flags). Throughout, every inject reaches every live node and no node ever reports a
member-failed (nobody is killed); at the end every node refuses plaintext."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import pytest
import trio
from e2e_helpers import counters, inject, wait_delivered

from chatter_inject.client import request as inject_request
from chatterd.core import wire
from chatterd.testing import HOST, LocalCluster, LocalNode, local_cluster

pytestmark = pytest.mark.e2e

KEY = "3ELWUulQ41HA5AFaA9xXsD/8T7uIbcGtwxLDLdRffj4="
SEAL = ["--encrypt", KEY, "--label", "rolling"]
PHASES = {  # the flags of each phase, and the health's encryption_mode
    1: ([*SEAL, "--no-encrypt-verify-outgoing", "--no-encrypt-verify-incoming"], "send-plaintext"),
    2: ([*SEAL, "--no-encrypt-verify-incoming"], "accept-plaintext"),
    3: (SEAL, "sealed"),
}


def argv(node: LocalNode, data_dir: Path, flags: list[str], seeds: list[LocalNode]) -> list[str]:
    base = ["--listen", node.addr, "--name", node.name, "--log-format", "json", "--profile", "local"]
    return [*base, "--data-dir", str(data_dir / node.name), *flags, *(a for s in seeds for a in ("--join", s.addr))]


async def failures(nodes: list[LocalNode]) -> list[tuple[str, str]]:
    """(observer, failed node) for every member-failed in the nodes' /v1/events."""
    out = []
    for n in nodes:
        out += [(n.name, e["origin"]) for e in await n.events() if e["kind"] == "member-failed"]
    return out


async def inject_everywhere(cluster: LocalCluster, target: LocalNode, sealed: bool) -> None:
    res = await inject(target.addr, {"rolling": {"via": target.name}}, *(SEAL if sealed else []))
    assert res.returncode == 0, str(res)
    await wait_delivered(cluster.running(), [res.stdout.split()[0]])


async def restart(
    cluster: LocalCluster, node: LocalNode, data_dir: Path, phase: int, seen: list[tuple[str, str]]
) -> None:
    seen += await failures([node])  # its events go with the process
    node.kill(signal.SIGTERM)
    assert await node.wait_exit() == 0
    flags, mode = PHASES[phase]
    node.args = argv(node, data_dir, flags, [n for n in cluster.nodes if n is not node][:2])
    node.start()
    await cluster.wait_converged(timeout=20)
    health = await node.get("/v1/health")
    assert health["encryption_mode"] == mode, health
    assert (health["warnings"] != []) == (phase < 3), health  # a warning while plaintext is accepted
    lines = [json.loads(line) for line in node.log_path.read_text().splitlines() if line.startswith("{")]
    warned = [line for line in lines if line.get("event") == "plaintext_accepted"]
    assert len(warned) == min(phase, 2), warned  # one line at each start in phases 1 and 2 (the log is appended)


async def test_a_plaintext_cluster_moves_to_encryption_one_node_at_a_time(tmp_path: Path) -> None:
    async with local_cluster(0, ["--profile", "local"], log_dir=tmp_path) as cluster:
        for i in range(5):
            name = f"n{i}"
            cluster.add(name, join=cluster.nodes[:1], args=["--data-dir", str(tmp_path / name)])
        await cluster.wait_converged(timeout=25)
        seen: list[tuple[str, str]] = []
        phase_of = dict.fromkeys((n.name for n in cluster.nodes), 0)
        for phase in PHASES:
            for node in cluster.nodes:
                await restart(cluster, node, tmp_path, phase, seen)
                phase_of[node.name] = phase
                other = cluster.nodes[(cluster.nodes.index(node) + 1) % 5]
                # From phase 1 on a node has the key: it answers a sealed chatter-inject sealed.
                await inject_everywhere(cluster, other, sealed=phase_of[other.name] >= 1)
        seen += await failures(cluster.nodes)
        assert seen == [], f"member-failed reported for nodes never killed: {seen}"

        # Every node now refuses plaintext: chatter-inject without the key, and a raw datagram.
        res = await inject(cluster.nodes[0].addr, {"plain": {}}, "--timeout", "1")
        assert res.returncode == 1 and "may require a key" in res.stderr, str(res)
        before = {n.name: (await counters(n)).get("plaintext_refused", 0) for n in cluster.nodes}
        _, plain = inject_request({"plain": {"raw": 1}})
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for n in cluster.nodes:
                sock.sendto(plain, (HOST, wire.parse_addr(n.addr)[1]))
        await trio.sleep(0.3)
        for n in cluster.nodes:
            c = await counters(n)
            assert c["plaintext_refused"] == before[n.name] + 1 and c.get("plaintext_accepted", 0) == 0, n.name
            assert not [e for e in await n.events() if e["kind"] == "user" and "plain" in str(e)], n.name
