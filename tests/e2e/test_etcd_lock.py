"""The etcd role lock (chatterd/lock.py) against a real etcd server on loopback.

Every test starts its own etcd (free ports, fresh data directory) and stops it by PID. The
locks run in the test's own trio run, so "a node dies" is cancelling its lock's task without
releasing anything. Bounds are generous: the tests assert outcomes and safety (never two
holders at once), not speed.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
from etcd_helpers import EtcdServer

from chatterd.harness import HOST
from chatterd.lock import EtcdClient, LockSpec, RoleLock, parse_lock_url

TTL = 2.0  # s: etcd's smallest lease TTL with its default timing
TIMEOUT = 20.0  # s: any single awaited outcome (each takes a few seconds at most)
ROLE = "primary"
PREFIX = "chatter/"
needs_etcd = pytest.mark.skipif(
    shutil.which("etcd") is None, reason="the etcd binary is not installed (Debian package etcd-server)"
)


# --- parse_lock_url (no etcd) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("etcd://127.0.0.1:2379/chatter/", LockSpec("127.0.0.1", 2379, "chatter/")),
        ("etcd://127.0.0.1:2379/chatter", LockSpec("127.0.0.1", 2379, "chatter/")),
        ("etcd://etcd.example:12379/a/b/", LockSpec("etcd.example", 12379, "a/b/")),
        ("etcd://localhost/chatter/", LockSpec("localhost", 2379, "chatter/")),
        ("etcd://[::1]:2379/x/", LockSpec("::1", 2379, "x/")),
        ("  etcd://10.0.0.1:2379/chatter/  ", LockSpec("10.0.0.1", 2379, "chatter/")),
    ],
)
def test_parse_lock_url_accepts(text: str, spec: LockSpec) -> None:
    assert parse_lock_url(text) == spec


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "scheme"),
        ("127.0.0.1:2379/chatter/", "scheme"),
        ("http://127.0.0.1:2379/chatter/", "scheme"),
        ("etcd:///chatter/", "no host"),
        ("etcd://127.0.0.1:2379", "no key prefix"),
        ("etcd://127.0.0.1:2379/", "no key prefix"),
        ("etcd://127.0.0.1:port/chatter/", "invalid lock URL"),
        ("etcd://127.0.0.1:70000/chatter/", "invalid lock URL"),
        ("etcd://127.0.0.1:0/chatter/", "port must be"),
        ("etcd://user:pw@127.0.0.1:2379/chatter/", "credentials"),
        ("etcd://127.0.0.1:2379/chatter/?x=1", "query"),
        ("etcd://127.0.0.1:2379/chat ter/", "whitespace"),
    ],
)
def test_parse_lock_url_rejects_with_one_clear_line(text: str, why: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_lock_url(text)
    message = str(info.value)
    assert why in message
    assert "\n" not in message
    assert "etcd://HOST[:PORT]/PREFIX" in message


# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
async def etcd(tmp_path: Path) -> AsyncIterator[EtcdServer]:
    server = EtcdServer(tmp_path / "etcd-data", tmp_path / "etcd.log")
    server.start()
    try:
        await server.wait_ready()
        yield server
    finally:
        await server.stop()


def spec_of(etcd: EtcdServer) -> LockSpec:
    return LockSpec(HOST, etcd.client_port, PREFIX)


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
    node = Node(name, RoleLock.for_spec(spec_of(etcd), name, ttl=TTL))

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


# --- scenarios -----------------------------------------------------------------------------


@needs_etcd
async def test_exactly_one_of_two_acquires_and_unwant_hands_over(etcd: EtcdServer) -> None:
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, etcd, "a")
        b = await start_node(nursery, etcd, "b")
        await nursery.start(watch_single_holder, [a, b])
        a.lock.want(ROLE)
        b.lock.want(ROLE)
        await wait_until(lambda: len(holders([a, b])) == 1)
        first, second = (a, b) if holders([a, b]) == ["a"] else (b, a)
        [(_, epoch1)] = first.acquired()
        assert epoch1 > 0

        # Several TTLs later, nothing has changed: the holder's keep-alives work.
        await trio.sleep(3 * TTL)
        assert holders([a, b]) == [first.name]
        assert second.acquired() == [] and first.lost() == []

        first.lock.unwant(ROLE)
        assert first.lock.held() == {}
        await wait_until(lambda: second.acquired() != [])
        [(_, epoch2)] = second.acquired()
        assert epoch2 > epoch1
        assert first.lost() == []  # a release is not a loss
        nursery.cancel_scope.cancel()


@needs_etcd
async def test_dead_holder_is_replaced_only_after_its_lease_expires(etcd: EtcdServer) -> None:
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, etcd, "a")
        a.lock.want(ROLE)
        await wait_until(lambda: a.acquired() != [])
        [(_, epoch1)] = a.acquired()
        b = await start_node(nursery, etcd, "b")
        b.lock.want(ROLE)
        await trio.sleep(2 * TTL)
        assert b.acquired() == []  # a's key blocks b while a lives

        deadline = a.lock.lease_deadline  # a would have believed it held the role until then
        assert deadline is not None
        died = trio.current_time()
        a.die()
        taken = await wait_until(lambda: b.acquired() != [])
        [(_, epoch2)] = b.acquired()
        assert epoch2 > epoch1
        assert taken > deadline, "b acquired while a could still believe it held the role"
        print(f"holder died -> other acquired: {taken - died:.2f} s (ttl {TTL} s)")
        nursery.cancel_scope.cancel()


@needs_etcd
async def test_paused_etcd_holder_steps_down_then_reacquires(etcd: EtcdServer) -> None:
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, etcd, "a")
        a.lock.want(ROLE)
        await wait_until(lambda: a.acquired() != [])
        [(_, epoch1)] = a.acquired()

        deadline = a.lock.lease_deadline
        assert deadline is not None
        etcd.pause()
        try:
            paused = trio.current_time()
            lost_at = await wait_until(lambda: a.lost() != [])
            [(_, reason)] = a.lost()
            assert "etcd unreachable" in reason and "lease expired" in reason
            assert a.lock.held() == {}
            # It stepped down on its own schedule (TTL after its last keep-alive), not later.
            assert lost_at < deadline + TTL / 3 + 1.0
            print(f"etcd paused -> holder stepped down: {lost_at - paused:.2f} s (ttl {TTL} s)")
            await trio.sleep(1.0)
        finally:
            etcd.resume()
        resumed = trio.current_time()
        again = await wait_until(lambda: len(a.acquired()) == 2)
        [_, (_, epoch2)] = a.acquired()
        assert epoch2 > epoch1
        assert a.lock.held() == {ROLE: epoch2}
        print(f"etcd resumed -> holder re-acquired: {again - resumed:.2f} s")
        nursery.cancel_scope.cancel()


@needs_etcd
async def test_restarted_etcd_holder_steps_down_then_reacquires(etcd: EtcdServer) -> None:
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, etcd, "a")
        a.lock.want(ROLE)
        await wait_until(lambda: a.acquired() != [])
        [(_, epoch1)] = a.acquired()

        await etcd.stop()
        await wait_until(lambda: a.lost() != [])
        [(_, reason)] = a.lost()
        assert "etcd unreachable" in reason
        etcd.start()  # same data directory and ports: etcd revives a's old lease and key
        await etcd.wait_ready()
        await wait_until(lambda: len(a.acquired()) == 2)
        [_, (_, epoch2)] = a.acquired()
        assert epoch2 > epoch1

        # The key is attached to a's new lease (the old one, revived by etcd, was revoked).
        async with EtcdClient(etcd.url) as client:
            kv = await client.get(PREFIX + ROLE)
        assert kv is not None and kv.value == "a" and kv.create_revision == epoch2
        assert kv.lease == a.lock.lease_id
        nursery.cancel_scope.cancel()


@needs_etcd
async def test_key_deleted_behind_the_holders_back_is_reported_lost(etcd: EtcdServer) -> None:
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, etcd, "a")
        a.lock.want(ROLE)
        await wait_until(lambda: a.acquired() != [])
        [(_, epoch1)] = a.acquired()
        async with EtcdClient(etcd.url) as client:
            key = base64.b64encode((PREFIX + ROLE).encode()).decode()
            await client._post("/v3/kv/deleterange", {"key": key})  # as `etcdctl del` would
        await wait_until(lambda: a.lost() != [])
        [(_, reason)] = a.lost()
        assert "deleted" in reason
        await wait_until(lambda: len(a.acquired()) == 2)  # still wanted: taken again
        [_, (_, epoch2)] = a.acquired()
        assert epoch2 > epoch1
        nursery.cancel_scope.cancel()


@needs_etcd
async def test_keys_on_our_lease_from_missed_answers_are_adopted_or_deleted(etcd: EtcdServer) -> None:
    """A transaction whose answer timed out may still be carried out by etcd later: the lock
    adopts such a key if it wants the role, and deletes it if not (else it would block the
    role for as long as we live)."""
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, etcd, "a")
        await wait_until(lambda: a.lock.lease_id is not None)
        lease = a.lock.lease_id
        assert lease is not None
        async with EtcdClient(etcd.url) as client:
            ok, wanted_rev, _ = await client.create(PREFIX + ROLE, "a", lease)
            assert ok
            ok, _, _ = await client.create(PREFIX + "stray", "a", lease)
            assert ok
            a.lock.want(ROLE)
            await wait_until(lambda: a.acquired() != [])
            assert a.acquired()[0][1] == wanted_rev

            async def stray_gone() -> None:
                while await client.get(PREFIX + "stray") is not None:
                    await trio.sleep(0.05)

            with trio.fail_after(TIMEOUT):
                await stray_gone()
        assert a.lock.held() == {ROLE: wanted_rev}
        nursery.cancel_scope.cancel()


@needs_etcd
async def test_release_all_frees_every_role_at_once(etcd: EtcdServer) -> None:
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, etcd, "a")
        for role in ("primary", "backup"):
            a.lock.want(role)
        await wait_until(lambda: len(a.lock.held()) == 2)
        b = await start_node(nursery, etcd, "b")
        for role in ("primary", "backup"):
            b.lock.want(role)
        await trio.sleep(1.0)
        assert b.lock.held() == {}

        await a.lock.release_all()
        assert a.lock.held() == {}
        await wait_until(lambda: len(b.lock.held()) == 2)
        assert b.lock.held()["primary"] > a.acquired("primary")[0][1]
        a.lock.want("primary")  # ignored once stopping
        await trio.sleep(1.0)
        assert a.lock.held() == {} and len(a.acquired("primary")) == 1
        nursery.cancel_scope.cancel()
