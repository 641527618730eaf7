"""RoleLock losing its roles, in virtual time on the fake etcd: cut off from etcd, etcd paused
or restarted, keys and leases changed behind its back; and getting them back. The world the
tests run in, and its safety watch: lock_world.py.
"""

from __future__ import annotations

import pytest
import trio
from fake_etcd import FakeEtcd
from lock_world import EPS, KEY, ROLE, TTL, World, holders, wait_until
from trio.testing import MockClock

from chatterd.core.config import LOCK_KEEPALIVES_PER_TTL, LOCK_RETRY_INTERVAL, LOCK_STEP_DOWN_FRACTION


@pytest.mark.parametrize("link", ["hang", "refused"])
async def test_a_holder_cut_off_from_etcd_steps_down_before_its_lease_expires(
    autojump_clock: MockClock, world: World, link: str
) -> None:
    a = await world.start("a")
    a.lock.want(ROLE)
    await wait_until(lambda: a.acquired() != [])
    [(_, epoch1)] = a.acquired()
    b = await world.start("b")
    b.lock.want(ROLE)
    await trio.sleep(TTL)
    a_lease = world.lease(a)
    a.client.link = "hang" if link == "hang" else "refused"

    await wait_until(lambda: a.lost() != [])
    [(lost_at, reason)] = a.lost()
    assert "etcd unreachable" in reason and "lease expired" in reason
    assert a.lock.held() == {} and a.lock.lease_id is None
    last_ack = a_lease.renewed[-1]
    assert lost_at <= last_ack + LOCK_STEP_DOWN_FRACTION * TTL + EPS  # its own schedule
    assert lost_at < last_ack + TTL == a_lease.expires  # before the server could free the key

    # b takes over once the server has expired a's lease, not before.
    await wait_until(lambda: b.acquired() != [])
    [(taken, epoch2)] = b.acquired()
    assert a_lease.expires <= taken <= a_lease.expires + LOCK_RETRY_INTERVAL + EPS and epoch2 > epoch1
    a.client.link = "up"  # back: a new lease, but b holds the role now
    await wait_until(lambda: a.lock.lease_id is not None)
    await trio.sleep(3 * TTL)
    assert holders([a, b]) == ["b"] and len(a.acquired()) == 1 and len(a.lost()) == 1


@pytest.mark.parametrize("carry_out_late", [False, True])
async def test_paused_etcd_holder_steps_down_then_reacquires(
    autojump_clock: MockClock, world: World, carry_out_late: bool
) -> None:
    a = await world.start("a")
    a.lock.want(ROLE)
    await wait_until(lambda: a.acquired() != [])
    [(_, epoch1)] = a.acquired()
    await trio.sleep(TTL / 2)
    old = world.lease(a)

    world.etcd.pause(carry_out_late=carry_out_late)
    await wait_until(lambda: a.lost() != [])
    [(lost_at, reason)] = a.lost()
    assert "etcd unreachable" in reason and "lease expired" in reason
    assert a.lock.held() == {}
    # It stepped down on its own schedule (0.8 TTL after its last keep-alive), not later.
    assert lost_at <= old.renewed[-1] + LOCK_STEP_DOWN_FRACTION * TTL + EPS < old.expires
    await trio.sleep(2 * TTL)
    assert len(a.acquired()) == 1  # nothing while etcd is away

    world.etcd.resume()
    resumed = trio.current_time()
    await wait_until(lambda: len(a.acquired()) == 2)
    [_, (again, epoch2)] = a.acquired()
    assert epoch2 > epoch1
    assert a.lock.held() == {ROLE: epoch2}
    assert world.etcd.expired == [old.id]  # the old lease expired when etcd resumed
    assert again - resumed <= 2 * LOCK_RETRY_INTERVAL + EPS
    assert len(a.lost()) == 1


async def test_restarted_etcd_holder_revokes_its_revived_lease_and_reacquires(
    autojump_clock: MockClock, world: World
) -> None:
    a = await world.start("a")
    a.lock.want(ROLE)
    await wait_until(lambda: a.acquired() != [])
    [(_, epoch1)] = a.acquired()
    old = a.lock.lease_id
    assert old is not None

    world.etcd.stop()
    await wait_until(lambda: a.lost() != [])
    [(_, reason)] = a.lost()
    assert "etcd unreachable" in reason
    await trio.sleep(2 * TTL)
    world.etcd.start()  # revives a's old lease and key
    started = trio.current_time()
    assert world.etcd.get(KEY) is not None
    await wait_until(lambda: len(a.acquired()) == 2)
    [_, (again, epoch2)] = a.acquired()
    assert epoch2 > epoch1

    # The key is attached to a's new lease; the old one, revived by etcd, was revoked rather
    # than left to block the role until it expired again.
    kv = world.etcd.get(KEY)
    assert kv is not None and kv.value == "a" and kv.create_revision == epoch2
    assert kv.lease == a.lock.lease_id != old
    assert old not in world.etcd.leases and old not in world.etcd.expired
    assert [c.args for c in world.etcd.calls if c.name == "revoke" and c.at >= started] == [(old,)]
    assert again < started + TTL


async def test_key_deleted_behind_the_holders_back_is_reported_lost(autojump_clock: MockClock, world: World) -> None:
    a = await world.start("a")
    a.lock.want(ROLE)
    await wait_until(lambda: a.acquired() != [])
    [(_, epoch1)] = a.acquired()
    world.etcd.delete(KEY)  # as `etcdctl del` would
    await wait_until(lambda: a.lost() != [])
    [(_, reason)] = a.lost()
    assert "deleted" in reason
    await wait_until(lambda: len(a.acquired()) == 2)  # still wanted: taken again
    [_, (_, epoch2)] = a.acquired()
    assert epoch2 > epoch1


async def test_key_replaced_behind_the_holders_back_is_lost_until_freed(
    autojump_clock: MockClock, world: World
) -> None:
    a = await world.start("a")
    a.lock.want(ROLE)
    await wait_until(lambda: a.acquired() != [])
    world.etcd.delete(KEY)
    world.etcd.put(KEY, "intruder")  # no lease: it stays until deleted
    await wait_until(lambda: a.lost() != [])
    [(_, reason)] = a.lost()
    assert reason == "our key was replaced in etcd by 'intruder'"
    await trio.sleep(5 * TTL)
    assert len(a.acquired()) == 1
    world.etcd.delete(KEY)
    await wait_until(lambda: len(a.acquired()) == 2)


async def test_a_lease_etcd_forgot_is_replaced_and_the_roles_retaken(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    world = World(FakeEtcd(), nursery)  # no watcher: a holds on a revoked lease until it notices
    a = await world.start("a")
    a.lock.want(ROLE)
    await wait_until(lambda: a.acquired() != [])
    [(_, epoch1)] = a.acquired()
    old = a.lock.lease_id
    assert old is not None
    revoked = trio.current_time()
    world.etcd.revoke(old)  # as `etcdctl lease revoke` would
    await wait_until(lambda: a.lost() != [])
    [(lost_at, reason)] = a.lost()
    assert reason in ("our key was deleted from etcd", "etcd lease expired: etcd no longer knows it")
    assert lost_at - revoked <= TTL / LOCK_KEEPALIVES_PER_TTL + EPS  # the next keep-alive or check
    await wait_until(lambda: len(a.acquired()) == 2)
    [_, (_, epoch2)] = a.acquired()
    assert epoch2 > epoch1 and a.lock.lease_id not in (None, old)
    assert len(a.lost()) == 1


async def test_a_short_ttl_rounded_up_by_etcd_still_steps_down_on_the_asked_one(
    autojump_clock: MockClock, world: World
) -> None:
    a = await world.start("a", ttl=1.0)  # etcd grants 2 s
    a.lock.want(ROLE)
    await wait_until(lambda: a.acquired() != [])
    lease = world.lease(a)
    assert lease.ttl == 2
    a.client.link = "refused"
    await wait_until(lambda: a.lost() != [])
    [(lost_at, _)] = a.lost()
    assert lost_at <= lease.renewed[-1] + LOCK_STEP_DOWN_FRACTION * 1.0 + EPS
