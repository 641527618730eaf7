"""The lock tests' world: a fake etcd, RoleLocks on it, what they reported, a safety watch.

Every test runs under ``trio.testing.MockClock(autojump_threshold=0)`` (pytest-trio's
``autojump_clock``): time only moves when every task sleeps, so timings are exact and a test
of a minute of lock life takes milliseconds. "A node dies" is cancelling its lock's task
without releasing anything. The watcher (:meth:`World.watch`, started by the ``world``
fixture) fails the test the moment two live nodes hold a role, or a node holds one while its
lease could have expired on the server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import trio
from fake_etcd import FakeEtcd, FakeEtcdClient, Lease
from trio.testing import MockClock

from chatterd.lock import RoleLock

TTL = 3.0  # s: keep-alives every 1 s, step down 2.4 s after sending the last good one
ROLE = "primary"
PREFIX = "chatter/"
KEY = PREFIX + ROLE
TIMEOUT = 60.0  # virtual s: any single awaited outcome
EPS = 1e-9


@dataclass
class Node:
    """A RoleLock, its link to etcd, and what it reported: (time, kind, role, epoch | reason)."""

    name: str
    client: FakeEtcdClient
    lock: RoleLock
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    events: list[tuple[float, str, str, int | str]] = field(default_factory=list)

    def acquired(self, role: str = ROLE) -> list[tuple[float, int]]:
        return [(t, int(x)) for t, kind, r, x in self.events if kind == "acquired" and r == role]

    def lost(self, role: str = ROLE) -> list[tuple[float, str]]:
        return [(t, str(x)) for t, kind, r, x in self.events if kind == "lost" and r == role]

    def calls(self, name: str) -> list[float]:
        return [c.at for c in self.client.server.calls if c.client == self.name and c.name == name]

    def die(self) -> None:
        """Like a crash: the lock's tasks stop, nothing is released."""
        self.scope.cancel()

    @property
    def dead(self) -> bool:
        return self.scope.cancel_called


@dataclass
class World:
    etcd: FakeEtcd
    nursery: trio.Nursery
    nodes: list[Node] = field(default_factory=list)

    async def start(self, name: str, ttl: float = TTL) -> Node:
        assert isinstance(trio.lowlevel.current_clock(), MockClock), "take the autojump_clock fixture"
        client = self.etcd.client(name)
        node = Node(name, client, RoleLock(client, name, ttl, prefix=PREFIX))

        def acquired(role: str, epoch: int) -> None:
            assert node.lock.held().get(role) == epoch
            node.events.append((trio.current_time(), "acquired", role, epoch))
            self.check_safe()

        def lost(role: str, reason: str) -> None:
            assert role not in node.lock.held()
            node.events.append((trio.current_time(), "lost", role, reason))

        node.lock.on_acquired = acquired
        node.lock.on_lost = lost

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with node.scope:
                await node.lock.run(task_status=task_status)

        await self.nursery.start(run)
        self.nodes.append(node)
        return node

    def check_safe(self) -> None:
        live = [n for n in self.nodes if not n.dead]
        for role in {r for n in live for r in n.lock.held()}:
            who = [n.name for n in live if role in n.lock.held()]
            assert len(who) <= 1, f"two holders of {role} at once: {who}"
        now = trio.current_time()
        for n in live:
            lease = self.etcd.leases.get(n.lock.lease_id or 0)
            if n.lock.held():
                assert lease is not None and lease.expires > now, f"{n.name} holds a role its lease may have lost"

    async def watch(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self.check_safe()
            await trio.sleep(0.01)

    def lease(self, node: Node) -> Lease:
        lease = self.etcd.leases.get(node.lock.lease_id or 0)
        assert lease is not None
        return lease


async def wait_until(check: Callable[[], bool], timeout: float = TIMEOUT) -> float:
    """Poll ``check`` until it is true; returns the time it became true (within 10 ms)."""
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.01)
    return trio.current_time()


def holders(nodes: list[Node], role: str = ROLE) -> list[str]:
    return [n.name for n in nodes if role in n.lock.held()]
