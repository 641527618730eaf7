"""chatterd --role r --lock etcd://...: real daemons against a real etcd on loopback.

* Exactly one node holds the role, it holds the etcd key, and the epoch every node shows is
  the key's create revision.
* kill -9 the holder: gossip elects a survivor within ~1.5 s, but it waits for the lock until
  the dead holder's lease has expired, then holds it at a higher epoch.
* SIGSTOP etcd: the holder steps down (role-lost, the lease reason) before its lease can have
  expired on the server, and nobody holds the role while etcd is away; SIGCONT: one node holds
  it again, at a higher epoch.

Throughout, the nodes' role-acquired / role-lost events (and the kill time) give each node's
holding intervals, and no two of them may overlap. Bounds are generous; the tests assert
outcomes and safety, not speed.
"""

from __future__ import annotations

import itertools
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from e2e_helpers import wait_until
from etcd_helpers import EtcdServer

from chatterd.lock import EtcdClient
from chatterd.testing import HOST, ClusterFactory, LocalCluster, LocalNode

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("etcd") is None, reason="the etcd binary is not installed (etcd-server)"),
]

ROLE = "r"
PREFIX = "locktest/"
TIMEOUT = 30.0  # s: any one awaited outcome (each takes a few seconds at most)


@pytest.fixture
async def etcd(tmp_path: Path) -> AsyncIterator[EtcdServer]:
    server = EtcdServer(tmp_path / "etcd-data", tmp_path / "etcd.log")
    server.start()
    try:
        await server.wait_ready()
        yield server
    finally:
        server.resume()  # a paused etcd is killed all the same, but leave nothing stopped
        await server.stop()


async def start(clusters: ClusterFactory, etcd: EtcdServer, ttl: float) -> LocalCluster:
    lock = f"etcd://{HOST}:{etcd.client_port}/{PREFIX}"
    cluster = await clusters(0, args=["--profile", "local", "--role", ROLE, "--lock", lock, "--lock-ttl", str(ttl)])
    for name in ("a", "b", "c"):
        cluster.add(name)
    await cluster.wait_converged()
    return cluster


async def row(node: LocalNode) -> dict[str, Any] | None:
    rows = await node.try_get("/v1/roles")
    return next((r for r in rows or [] if r["role"] == ROLE), None)


async def holders(cluster: LocalCluster) -> list[tuple[str, int]]:
    """(name, epoch) of every running node that says it holds the role."""
    out = []
    for n in cluster.running():
        r = await row(n)
        if r is not None and r["held_here"]:
            out.append((n.name, int(r["epoch"])))
    return out


async def wait_one_holder(cluster: LocalCluster, what: str) -> tuple[str, int]:
    async def one() -> bool:
        return len(await holders(cluster)) == 1

    await wait_until(one, TIMEOUT, what)
    [(name, epoch)] = await holders(cluster)
    return name, epoch


async def etcd_key(etcd: EtcdServer) -> tuple[str, int] | None:
    async with EtcdClient(etcd.url, timeout=2.0) as client:
        kv = await client.get(PREFIX + ROLE)
    return None if kv is None else (kv.value, kv.create_revision)


class Intervals:
    """Each node's holding intervals (wall clock), from its role events."""

    def __init__(self) -> None:
        self.by_node: dict[str, list[list[float]]] = {}  # name -> [[start, end], ...]
        self.epochs: dict[str, list[int]] = {}

    async def collect(self, node: LocalNode, end: float | None = None) -> None:
        """Read ``node``'s events (before it is killed); ``end`` closes a still-open interval."""
        spans: list[list[float]] = []
        epochs: list[int] = []
        for ev in await node.events():
            p = ev["payload"]
            if ev["kind"] == "role-acquired" and p.get("holder") == node.name and p.get("role") == ROLE:
                spans.append([ev["received_at"], float("inf")])
                epochs.append(int(p["epoch"]))
            elif ev["kind"] == "role-lost" and p.get("holder") == node.name and p.get("role") == ROLE:
                assert spans and spans[-1][1] == float("inf"), f"{node.name}: role-lost without holding"
                spans[-1][1] = ev["received_at"]
        if end is not None and spans and spans[-1][1] == float("inf"):
            spans[-1][1] = end
        self.by_node[node.name] = spans
        self.epochs[node.name] = epochs

    def assert_disjoint(self) -> None:
        spans = sorted((s, e, name) for name, ss in self.by_node.items() for s, e in ss)
        for (_s1, e1, n1), (s2, _e2, n2) in itertools.pairwise(spans):
            assert e1 <= s2, f"{n1} held {ROLE} until {e1} but {n2} already from {s2}"
        every = sorted(e for es in self.epochs.values() for e in es)
        assert len(every) == len(set(every)), f"an epoch was granted twice: {self.epochs}"


async def test_one_holder_and_a_dead_holders_lock_is_free_only_after_its_lease(
    chatter_cluster_factory: ClusterFactory, etcd: EtcdServer
) -> None:
    ttl = 5.0  # long enough that gossip (detection ~1.5 s) elects a survivor well before expiry
    cluster = await start(chatter_cluster_factory, etcd, ttl)
    holder, epoch = await wait_one_holder(cluster, "one node holds the role")
    assert await etcd_key(etcd) == (holder, epoch)

    async def all_agree() -> bool:
        rows = [await row(n) for n in cluster.running()]
        return all(r is not None and (r["holder"], r["epoch"]) == (holder, epoch) for r in rows)

    await wait_until(all_agree, TIMEOUT, "every node shows the holder and its epoch")
    for _ in range(10):  # and it stays that way
        assert await holders(cluster) == [(holder, epoch)]
        await trio.sleep(0.1)

    intervals = Intervals()
    old = cluster.node(holder)
    await intervals.collect(old)
    killed_at = time.time()
    t_kill = trio.current_time()
    old.kill(signal.SIGKILL)
    await old.wait_exit()
    intervals.by_node[holder][-1][1] = killed_at
    survivors = cluster.running()

    waited: list[str] = []  # an elected survivor waiting for the dead holder's lock

    async def taken() -> bool:
        for n in survivors:
            r = await row(n)
            if r is not None and r["waiting_for_lock"]:
                waited.append(n.name)
        return len(await holders(cluster)) == 1

    await wait_until(taken, TIMEOUT, "a survivor takes the role")
    took = trio.current_time() - t_kill
    new, new_epoch = (await holders(cluster))[0]
    assert new != holder and new_epoch > epoch
    assert await etcd_key(etcd) == (new, new_epoch)
    assert waited, "no survivor was seen waiting for the lock"
    # The dead holder's last keep-alive went out at most ttl/3 before the kill, so its lease
    # lived at least 2/3 ttl after it: nobody may hold the role before then.
    assert took >= ttl * 2 / 3 - 0.2, f"role taken {took:.2f} s after the kill, before the lease expired"

    for n in survivors:
        await intervals.collect(n)
    intervals.assert_disjoint()


async def test_the_holder_steps_down_while_etcd_is_paused_and_the_role_returns(
    chatter_cluster_factory: ClusterFactory, etcd: EtcdServer
) -> None:
    ttl = 2.0
    cluster = await start(chatter_cluster_factory, etcd, ttl)
    holder, epoch = await wait_one_holder(cluster, "one node holds the role")
    node = cluster.node(holder)
    etcd.pause()
    t_pause = trio.current_time()

    async def stepped_down() -> bool:
        r = await row(node)
        return r is not None and not r["held_here"]

    await wait_until(stepped_down, TIMEOUT, f"{holder} steps down while etcd is paused")
    took = trio.current_time() - t_pause
    # It steps down 0.8 ttl after the last keep-alive that succeeded (at most ttl/3 before
    # the pause), so well within ttl; a loaded machine may delay our seeing it.
    assert took < ttl + 3.0, f"{holder} stepped down {took:.2f} s after etcd was paused"
    lost = [
        ev["payload"]["reason"]
        for ev in await node.events()
        if ev["kind"] == "role-lost" and ev["payload"]["holder"] == holder
    ]
    assert lost and "lease" in lost[-1], lost

    for _ in range(10):  # nobody holds it while etcd is away
        assert await holders(cluster) == []
        await trio.sleep(0.1)

    etcd.resume()
    new, new_epoch = await wait_one_holder(cluster, "someone holds the role again after etcd resumes")
    assert new_epoch > epoch
    assert await etcd_key(etcd) == (new, new_epoch)

    intervals = Intervals()
    for n in cluster.running():
        await intervals.collect(n)
    intervals.assert_disjoint()
    assert intervals.by_node[holder][0][1] != float("inf")  # its first holding did end
