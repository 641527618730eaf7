"""A lock holder cut off from its cluster's majority, while it still reaches etcd (issue #12).

Four hosts: etcd on h3, reachable by all; chatterd on h0..h2 with ``--role engine --lock
etcd://198.18.0.4:2379/engine/ --expect 3``. iptables cuts the holder off from its two peers,
both ways, but not from etcd. The holder must give the lock up (role-lost "lost quorum", its
key deleted at once, not at lease expiry: it still keeps its lease alive) so that the
majority's elected node takes it at a higher epoch; at no sampled moment may two nodes say
they hold the role. Then the cut heals: still one holder, no epoch going back.

The measured figures are printed as ``figure: ...`` lines (``pytest -s`` or ``-rP``); the
bounds are generous (15 s where ~2 s is expected).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from etcd_on_host import ETCD_PORT, EtcdOnHost

from chatterd.testing.hostcluster import HostCluster, HostNode, host_cluster

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("etcd") is None, reason="the etcd binary is not installed (etcd-server)"),
]

ROLE = "engine"
PREFIX = "engine/"
FORM_TIMEOUT = 30.0  # three hosts form in ~3 s
TAKEOVER_TIMEOUT = 15.0  # cut -> a new holder: ~2 s in the local profile
HEAL_TIMEOUT = 30.0


def figure(what: str, seconds: float) -> None:
    print(f"figure: {what}: {seconds:.2f} s")


@pytest.fixture
async def lock_cluster(hosts_dir: Path) -> AsyncIterator[tuple[HostCluster, EtcdOnHost]]:
    """h3 runs etcd; h0..h2 run chatterd, candidates for the locked role, expecting 3 members."""
    async with host_cluster(4, base_dir=hosts_dir, start=False) as cluster:
        etcd = EtcdOnHost(cluster.network[3], hosts_dir, PREFIX)
        try:
            etcd.start()
            await etcd.wait_ready()
            lock = f"etcd://{etcd.host.addr}:{ETCD_PORT}/{PREFIX}"
            args = ["--role", ROLE, "--lock", lock, "--expect", "3"]
            engines = cluster.nodes[:3]
            for node in engines:
                cluster.start(node.name, args=args)
            cluster.formed_in = await cluster.wait_converged(FORM_TIMEOUT, nodes=engines)
            yield cluster, etcd
        finally:
            await etcd.client.aclose()


class Sampler:
    """Samples every engine's GET /v1/roles, over and over: who says it holds the role."""

    def __init__(self, nodes: list[HostNode]) -> None:
        self.nodes = nodes
        self.rounds = 0
        self.doubles: list[dict[str, int]] = []  # rounds in which two nodes said they hold it

    async def holders(self) -> dict[str, int]:
        """name -> epoch of every engine that says (now) it holds the role. The engines are asked
        at once, so a round is one moment (give or take one request), not three."""
        out: dict[str, int] = {}

        async def ask(n: HostNode) -> None:
            rows = await n.try_get("/v1/roles") or []
            row = next((r for r in rows if r.get("role") == ROLE), None)
            if row is not None and row["held_here"]:
                out[n.name] = int(row["epoch"])

        async with trio.open_nursery() as nursery:
            for n in self.nodes:
                nursery.start_soon(ask, n)
        return out

    async def run(self) -> None:
        while True:
            held = await self.holders()
            self.rounds += 1
            if len(held) > 1:
                self.doubles.append(held)
            await trio.sleep(0.05)


async def role_events(node: HostNode) -> list[dict[str, Any]]:
    """``node``'s own role-acquired / role-lost events for the role (payload + received_at)."""
    return [
        ev["payload"] | {"kind": ev["kind"], "at": ev["received_at"]}
        for ev in await node.get("/v1/events")
        if ev["kind"] in ("role-acquired", "role-lost")
        and ev["payload"].get("role") == ROLE
        and ev["payload"].get("holder") == node.name
    ]


async def one_holder(cluster: HostCluster, sampler: Sampler, other_than: str | None = None) -> tuple[str, int]:
    found: dict[str, int] = {}

    async def check() -> bool:
        found.clear()
        found.update(await sampler.holders())
        return len(found) == 1 and other_than not in found

    await cluster.wait_for(check, TAKEOVER_TIMEOUT, what=lambda: f"one holder of {ROLE}, not {other_than}: {found}")
    [(name, epoch)] = found.items()
    return name, epoch


async def test_a_holder_cut_off_from_its_majority_gives_the_lock_up(
    lock_cluster: tuple[HostCluster, EtcdOnHost],
) -> None:
    cluster, etcd = lock_cluster
    engines = cluster.nodes[:3]
    sampler = Sampler(engines)
    holder, epoch = await one_holder(cluster, sampler)
    assert await etcd.key(ROLE) == (holder, epoch)
    old = cluster.node(holder)
    peers = [n for n in engines if n is not old]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sampler.run)
        cut_wall, cut = time.time(), trio.current_time()
        old.host.cut_off([p.host for p in peers])  # not from etcd's host

        async def key_moved() -> bool:
            return await etcd.key(ROLE) != (holder, epoch)

        await cluster.wait_for(key_moved, TAKEOVER_TIMEOUT, what=f"{holder}'s etcd key deleted or replaced")
        figure(f"cut -> {holder}'s etcd key gone", trio.current_time() - cut)
        new, new_epoch = await one_holder(cluster, sampler, other_than=holder)
        figure(f"cut -> {new} holds the role (sampled)", trio.current_time() - cut)
        assert new != holder and new_epoch > epoch
        assert await etcd.key(ROLE) == (new, new_epoch)

        lost = [ev for ev in await role_events(old) if ev["kind"] == "role-lost" and ev["epoch"] == epoch]
        assert lost and "lost quorum" in lost[-1]["reason"], lost
        got = [ev for ev in await role_events(cluster.node(new)) if ev["kind"] == "role-acquired"]
        assert got and got[-1]["epoch"] == new_epoch, got
        dropped, acquired = lost[-1]["at"] - cut_wall, got[-1]["at"] - cut_wall
        figure(f"cut -> {holder} drops the role (its event)", dropped)
        figure(f"cut -> {new} acquires it (its event)", acquired)
        assert dropped < acquired  # the old holder had stepped down first

        old.host.heal()
        await cluster.wait_converged(HEAL_TIMEOUT, nodes=engines)
        after, after_epoch = await one_holder(cluster, sampler)
        await trio.sleep(1.0)  # and it stays that way for a while, sampled
        assert await sampler.holders() == {after: after_epoch}
        nursery.cancel_scope.cancel()

    assert after_epoch >= new_epoch
    assert after == new  # equal priorities: the role does not go back
    assert await etcd.key(ROLE) == (after, after_epoch)
    assert sampler.rounds > 20 and sampler.doubles == [], sampler.doubles
