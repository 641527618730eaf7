"""What the role lock expects of etcd, checked against the real one (tests/e2e/test_etcd_lock.py,
through chatterd.lock.EtcdClient) and against the fake (tests/lock/test_fake_etcd.py), so the
lock's virtual-time tests run on a model that answers as etcd does.

Each check wants a fresh etcd (or at least a prefix nobody else uses). Bounds on elapsed time
hold in real and in virtual time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import pytest
import trio

from chatterd.lock.etcd import GRPC_NOT_FOUND, EtcdError, EtcdUnavailable, KeyValue, LockClient

UNKNOWN_LEASE = 0x7E57_0000_0000_0001
MIN_TTL = 2  # s: etcd 3.4 rounds shorter lease TTLs up to this with its default timing


class ContractClient(LockClient, Protocol):
    @property
    def timeout(self) -> float: ...

    async def get(self, key: str) -> KeyValue | None: ...
    async def delete(self, key: str) -> int: ...


async def check_leases(client: ContractClient) -> None:
    """Grant (short TTLs rounded up), keep-alive, revoke; unknown leases."""
    lease, ttl = await client.grant(1)
    assert ttl == MIN_TTL
    other, ttl = await client.grant(7)
    assert ttl == 7 and other != lease
    assert await client.keepalive(other) == 7
    assert await client.keepalive(lease, timeout=0.5) == MIN_TTL
    assert await client.revoke(lease) is True
    assert await client.revoke(lease) is False  # already gone: NotFound, not an error
    assert await client.keepalive(lease) == 0  # etcd no longer knows it
    assert await client.keepalive(UNKNOWN_LEASE) == 0
    assert await client.revoke(UNKNOWN_LEASE) is False


async def check_keys(client: ContractClient, prefix: str) -> None:
    """Put-if-absent, create revisions, listing by prefix, conditional delete, revoke."""
    lease, _ = await client.grant(10)
    other, _ = await client.grant(10)
    key = prefix + "primary"
    ok, rev1, existing = await client.create(key, "a", lease)
    assert ok and existing is None and rev1 > 0
    kv = await client.get(key)
    assert kv == KeyValue(key, "a", rev1, lease)

    # The key exists: no put, the current revision and the holder's key come back.
    ok, rev, existing = await client.create(key, "b", other)
    assert not ok and rev == rev1 and existing == kv
    ok, _, existing = await client.create(key, "b", UNKNOWN_LEASE)  # the lease is not looked at
    assert not ok and existing == kv
    with pytest.raises(EtcdError) as info:  # but a put on an unknown lease is refused
        await client.create(prefix + "nolease", "a", UNKNOWN_LEASE)
    assert info.value.code == GRPC_NOT_FOUND
    assert await client.get(prefix + "nolease") is None

    # Every put adds one to the revision; the listing is by key, within the prefix only.
    ok, rev2, _ = await client.create(prefix + "backup", "b", other)
    assert ok and rev2 == rev1 + 1
    for outside in (prefix[:-1], prefix[:-1] + "0", "0" + prefix):  # '0' follows '/'
        ok, _, _ = await client.create(outside, "x", other)
        assert ok
    listing = await client.list_prefix(prefix)
    assert listing == [KeyValue(prefix + "backup", "b", rev2, other), kv]

    # delete_if: only our value on our lease; a delete adds one to the revision.
    assert await client.delete_if(key, "b", lease) is False
    assert await client.delete_if(key, "a", other) is False
    assert await client.get(key) == kv
    assert await client.delete_if(key, "a", lease) is True
    assert await client.get(key) is None
    assert await client.delete_if(key, "a", lease) is False
    ok, rev3, _ = await client.create(key, "a", lease)
    assert ok and rev3 == rev2 + 3 + 2  # 3 outside keys, the delete, then this put

    # Revoking a lease deletes all its keys in one revision; deleting any key works too.
    ok, rev4, _ = await client.create(prefix + "third", "a", lease)
    assert await client.revoke(lease) is True
    assert await client.get(key) is None and await client.get(prefix + "third") is None
    ok, rev5, _ = await client.create(prefix + "after", "c", other)
    assert ok and rev5 == rev4 + 2
    with pytest.raises(EtcdError) as info:
        await client.create(prefix + "late", "a", lease)  # a revoked lease holds nothing
    assert info.value.code == GRPC_NOT_FOUND
    assert await client.delete(prefix + "backup") == 1
    assert await client.delete(prefix + "backup") == 0
    assert [kv.key for kv in await client.list_prefix(prefix)] == [prefix + "after"]


async def check_paused(client: ContractClient, pause: Callable[[], None], resume: Callable[[], None]) -> None:
    """A paused (SIGSTOP) etcd: calls fail after their timeout; etcd answers again once resumed.

    A call that timed out may still be carried out after the resume, or not: etcd 3.4 has done
    both here (the fake does either, ``pause(carry_out_late=...)``)."""
    lease, _ = await client.grant(10)
    pause()
    try:
        start = trio.current_time()
        with pytest.raises(EtcdUnavailable, match="no answer"):
            await client.keepalive(lease, timeout=0.3)
        assert 0.3 <= trio.current_time() - start < 0.3 + 0.5
        start = trio.current_time()
        with pytest.raises(EtcdUnavailable, match="no answer"):
            await client.create("paused/late", "a", lease)
        assert client.timeout <= trio.current_time() - start < client.timeout + 0.5
    finally:
        resume()
    assert await client.keepalive(lease) == 10
    await trio.sleep(0.2)
    late = await client.get("paused/late")
    assert late is None or (late.value, late.lease) == ("a", lease)


async def check_refused(client: LockClient) -> None:
    """Nothing listening: every call fails at once."""
    start = trio.current_time()
    with pytest.raises(EtcdUnavailable):
        await client.grant(5)
    with pytest.raises(EtcdUnavailable):
        await client.keepalive(UNKNOWN_LEASE)
    assert trio.current_time() - start < 0.5
