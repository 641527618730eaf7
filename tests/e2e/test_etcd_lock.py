"""chatterd.lock against a real etcd server on loopback.

* The client speaks etcd's v3 JSON gateway: the same checks (tests/lock/etcd_contract.py) pass
  against etcd here and against the fake etcd that RoleLock's behaviour tests run on, in
  virtual time (tests/lock/test_role_lock.py: hand-over, retries, step-down, restarts,
  missed answers, release).
* End to end, RoleLock.for_spec acquires a role, a dead holder's role is taken only after its
  lease expired, and a restarted etcd (which revives old leases) costs the holder its role
  until it is taken again on a new lease.

Every test starts its own etcd (free ports, fresh data directory) and stops it by PID. The
locks run in the test's own trio run, so "a node dies" is cancelling its lock's task without
releasing anything. Bounds are generous: the tests assert outcomes and safety (never two
holders at once), not speed.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
from etcd_helpers import EtcdServer

from chatterd.lock import EtcdClient, LockSpec, RoleLock
from chatterd.testing import HOST, free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lock"))
from etcd_contract import check_keys, check_leases, check_paused, check_refused

TTL = 2.0  # s: etcd's smallest lease TTL with its default timing
TIMEOUT = 20.0  # s: any single awaited outcome (each takes a few seconds at most)
ROLE = "primary"
PREFIX = "chatter/"
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("etcd") is None, reason="the etcd binary is not installed (Debian package etcd-server)"
    ),
]


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


# --- the client ------------------------------------------------------------------------------


async def test_client_speaks_etcd(etcd: EtcdServer) -> None:
    async with EtcdClient(etcd.url) as client:
        await check_leases(client)
        await check_keys(client, "contract/")


async def test_client_fails_within_its_timeout_on_a_paused_or_absent_etcd(etcd: EtcdServer) -> None:
    async with EtcdClient(etcd.url) as client:
        await check_paused(client, etcd.pause, etcd.resume)
    async with EtcdClient(f"http://{HOST}:{free_port()}") as nobody:
        await check_refused(nobody)


# --- RoleLock end to end -----------------------------------------------------------------------


@dataclass
class Node:
    """A RoleLock and what it reported: (trio time, "acquired" | "lost", role, epoch | reason)."""

    name: str
    lock: RoleLock
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    events: list[tuple[float, str, str, int | str]] = field(default_factory=list)

    def acquired(self, role: str = ROLE) -> list[tuple[float, int]]:
        return [(t, int(x)) for t, kind, r, x in self.events if kind == "acquired" and r == role]

    def lost(self, role: str = ROLE) -> list[tuple[float, str]]:
        return [(t, str(x)) for t, kind, r, x in self.events if kind == "lost" and r == role]

    def die(self) -> None:
        """Like a crash: the lock's tasks stop, nothing is released."""
        self.scope.cancel()


async def start_node(nursery: trio.Nursery, etcd: EtcdServer, name: str) -> Node:
    node = Node(name, RoleLock.for_spec(LockSpec(HOST, etcd.client_port, PREFIX), name, ttl=TTL))

    def acquired(role: str, epoch: int) -> None:
        assert node.lock.held().get(role) == epoch
        node.events.append((trio.current_time(), "acquired", role, epoch))

    def lost(role: str, reason: str) -> None:
        assert role not in node.lock.held()
        node.events.append((trio.current_time(), "lost", role, reason))

    node.lock.on_acquired = acquired
    node.lock.on_lost = lost

    async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with node.scope:
            await node.lock.run(task_status=task_status)

    await nursery.start(run)
    return node


async def wait_until(check: Callable[[], bool], timeout: float = TIMEOUT) -> float:
    """Poll ``check`` until it is true; returns the trio time it became true."""
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.01)
    return trio.current_time()


def holders(nodes: list[Node]) -> list[str]:
    return [n.name for n in nodes if ROLE in n.lock.held()]


async def watch_single_holder(nodes: list[Node], task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Fails the test the moment two live nodes believe they hold the role."""
    task_status.started()
    while True:
        live = [n for n in nodes if not n.scope.cancel_called]
        assert len(holders(live)) <= 1, f"two holders at once: {holders(live)}"
        await trio.sleep(0.005)


async def test_a_role_is_held_lost_with_its_holder_or_etcd_and_taken_again(etcd: EtcdServer) -> None:
    async with trio.open_nursery() as nursery, EtcdClient(etcd.url) as client:
        a = await start_node(nursery, etcd, "a")
        a.lock.want(ROLE)
        await wait_until(lambda: a.acquired() != [])
        [(_, epoch1)] = a.acquired()
        kv = await client.get(PREFIX + ROLE)  # the epoch is the key's create revision
        assert kv is not None and (kv.value, kv.lease, kv.create_revision) == ("a", a.lock.lease_id, epoch1)
        b = await start_node(nursery, etcd, "b")
        await nursery.start(watch_single_holder, [a, b])
        b.lock.want(ROLE)
        await trio.sleep(1.5 * TTL)
        assert b.acquired() == []  # a's key blocks b while a lives: its keep-alives work

        # a dies: b takes the role only once a's lease has expired on the server.
        deadline = a.lock.lease_deadline  # a would have believed it held the role until then
        assert deadline is not None
        died = trio.current_time()
        a.die()
        taken = await wait_until(lambda: b.acquired() != [])
        [(_, epoch2)] = b.acquired()
        assert epoch2 > epoch1
        assert taken > deadline, "b acquired while a could still believe it held the role"
        print(f"holder died -> other acquired: {taken - died:.2f} s (ttl {TTL} s)")

        # etcd restarts: b steps down, then holds the role again on a new lease; etcd revived
        # the old one with the key, and b revoked it rather than wait for it to expire.
        old = b.lock.lease_id
        await etcd.stop()
        await wait_until(lambda: b.lost() != [])
        [(_, reason)] = b.lost()
        assert "etcd unreachable" in reason
        etcd.start()  # same data directory and ports
        await etcd.wait_ready()
        await wait_until(lambda: len(b.acquired()) == 2)
        [_, (_, epoch3)] = b.acquired()
        assert epoch3 > epoch2
        kv = await client.get(PREFIX + ROLE)
        assert kv is not None and kv.value == "b" and kv.create_revision == epoch3
        assert kv.lease == b.lock.lease_id != old
        assert old is not None and await client.keepalive(old) == 0  # revoked
        nursery.cancel_scope.cancel()
