"""RoleLock's behaviour in virtual time on the fake etcd: acquiring, holding, handing over,
answers that never came, releasing (losing a role: test_role_lock_outages.py). The world the
tests run in, and its safety watch: lock_world.py.
"""

from __future__ import annotations

import itertools

import pytest
import trio
from fake_etcd import FakeEtcd
from lock_world import EPS, KEY, PREFIX, ROLE, TTL, World, holders, wait_until
from trio.testing import MockClock

from chatterd.core.config import LOCK_KEEPALIVES_PER_TTL, LOCK_RETRY_INTERVAL
from chatterd.lock import EtcdClient, LockSpec, RoleLock

# --- acquiring and holding ---------------------------------------------------------------


async def test_a_free_role_is_acquired_at_once_at_the_keys_create_revision(
    autojump_clock: MockClock, world: World
) -> None:
    a = await world.start("a")
    a.lock.want(ROLE)
    await wait_until(lambda: a.acquired() != [])
    [(taken, epoch)] = a.acquired()
    assert taken == 0.0
    kv = world.etcd.get(KEY)
    assert kv is not None and (kv.value, kv.lease, kv.create_revision) == ("a", a.lock.lease_id, epoch)
    assert a.lock.held() == {ROLE: epoch}

    # Ten TTLs later nothing has changed: one keep-alive every TTL/3, each acknowledged in time.
    a.lock.want(ROLE)  # wanting it again changes nothing
    await trio.sleep(10 * TTL)
    assert a.acquired() == [(taken, epoch)] and a.lost() == []
    keepalives = a.calls("keepalive")
    assert len(keepalives) >= 10 * LOCK_KEEPALIVES_PER_TTL
    gaps = {round(t2 - t1, 6) for t1, t2 in itertools.pairwise(keepalives)}
    assert gaps == {TTL / LOCK_KEEPALIVES_PER_TTL}
    assert a.calls("grant") == [0.0]

    a.lock.want("backup")  # another role: the same lease, a later revision
    await wait_until(lambda: a.acquired("backup") != [])
    [(_, backup)] = a.acquired("backup")
    assert backup > epoch and a.lock.held() == {ROLE: epoch, "backup": backup}
    backup_kv = world.etcd.get(PREFIX + "backup")
    assert backup_kv is not None and backup_kv.lease == a.lock.lease_id


async def test_exactly_one_of_two_acquires_and_unwant_hands_over(autojump_clock: MockClock, world: World) -> None:
    a = await world.start("a")
    b = await world.start("b")
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

    unwanted = trio.current_time()
    first.lock.unwant(ROLE)
    assert first.lock.held() == {}
    await wait_until(lambda: second.acquired() != [])
    [(taken, epoch2)] = second.acquired()
    assert taken - unwanted <= LOCK_RETRY_INTERVAL + EPS  # deleted at once, taken at the next try
    assert epoch2 > epoch1
    assert first.lost() == []  # a release is not a loss
    assert first.calls("delete_if") != []  # our key was deleted, not left to expire
    kv = world.etcd.get(KEY)
    assert kv is not None and (kv.value, kv.create_revision) == (second.name, epoch2)
    await trio.sleep(3 * TTL)
    assert len(first.acquired()) == 1 and len(second.acquired()) == 1


async def test_a_key_held_by_a_dead_node_is_retried_until_its_lease_expires(
    autojump_clock: MockClock, world: World
) -> None:
    a = await world.start("a")
    a.lock.want(ROLE)
    await wait_until(lambda: a.acquired() != [])
    [(_, epoch1)] = a.acquired()
    b = await world.start("b")
    b.lock.want(ROLE)
    since = trio.current_time()
    await trio.sleep(2 * TTL)
    assert b.acquired() == []  # a's key blocks b while a lives
    tries = [t for t in b.calls("list_prefix") if t > since]
    assert len(tries) >= 2 * TTL / LOCK_RETRY_INTERVAL - 1  # b keeps trying every retry interval

    deadline = a.lock.lease_deadline  # a would have believed it held the role until then
    assert deadline is not None
    a_lease = world.lease(a)
    a.die()
    expiry = a_lease.renewed[-1] + a_lease.ttl  # on the server: TTL after a's last keep-alive
    await wait_until(lambda: b.acquired() != [])
    [(taken, epoch2)] = b.acquired()
    assert epoch2 > epoch1
    assert taken > deadline, "b acquired while a could still believe it held the role"
    assert expiry <= taken <= expiry + LOCK_RETRY_INTERVAL + EPS
    assert world.etcd.expired == [a_lease.id]


async def test_want_while_etcd_is_down_acquires_once_it_answers(autojump_clock: MockClock, world: World) -> None:
    world.etcd.stop()
    a = await world.start("a")  # starts at once all the same
    a.lock.want(ROLE)
    await trio.sleep(5 * TTL)
    assert a.lock.lease_id is None and a.events == []
    world.etcd.start()
    up = trio.current_time()
    await wait_until(lambda: a.acquired() != [])
    [(taken, _)] = a.acquired()
    assert taken - up <= 2 * LOCK_RETRY_INTERVAL + EPS


# --- answers that never came ---------------------------------------------------------------


async def test_keys_on_our_lease_from_missed_answers_are_adopted_or_deleted(
    autojump_clock: MockClock, world: World
) -> None:
    """A transaction whose answer timed out may still be carried out by etcd: the lock adopts
    such a key if it wants the role, and deletes it if not (else it would block the role for
    as long as we live)."""
    a = await world.start("a")
    await wait_until(lambda: a.lock.lease_id is not None)
    lease = a.lock.lease_id
    assert lease is not None
    wanted_rev = world.etcd.put(KEY, "a", lease)
    world.etcd.put(PREFIX + "stray", "a", lease)
    a.lock.want(ROLE)
    await wait_until(lambda: a.acquired() != [])
    assert a.acquired()[0][1] == wanted_rev
    await wait_until(lambda: world.etcd.get(PREFIX + "stray") is None)
    assert a.lock.held() == {ROLE: wanted_rev}


async def test_creates_whose_answers_are_lost_are_adopted_or_deleted(autojump_clock: MockClock, world: World) -> None:
    a = await world.start("a")
    await wait_until(lambda: a.lock.lease_id is not None)
    a.client.lose_answers = {"create"}
    a.lock.want(ROLE)
    await wait_until(lambda: a.acquired() != [])
    [(_, epoch)] = a.acquired()
    kv = world.etcd.get(KEY)
    assert kv is not None and kv.create_revision == epoch and len(a.calls("create")) == 1

    a.lock.want("backup")
    await wait_until(lambda: len(a.calls("create")) == 2)  # on its way...
    a.lock.unwant("backup")  # ... when we stop wanting the role
    await wait_until(lambda: world.etcd.get(PREFIX + "backup") is None)
    assert a.acquired("backup") == [] and a.lock.held() == {ROLE: epoch}
    await trio.sleep(3 * TTL)
    assert len(a.acquired()) == 1 and a.lost() == []


# --- stopping ------------------------------------------------------------------------------


async def test_release_all_frees_every_role_at_once(autojump_clock: MockClock, world: World) -> None:
    a = await world.start("a")
    for role in ("primary", "backup"):
        a.lock.want(role)
    await wait_until(lambda: len(a.lock.held()) == 2)
    b = await world.start("b")
    for role in ("primary", "backup"):
        b.lock.want(role)
    await trio.sleep(1.0)
    assert b.lock.held() == {}

    lease = a.lock.lease_id
    released = trio.current_time()
    await a.lock.release_all()
    assert a.lock.held() == {} and a.lock.lease_id is None
    assert lease not in world.etcd.leases and world.etcd.expired == []  # revoked, not expired
    await wait_until(lambda: len(b.lock.held()) == 2)
    taken = max(t for t, kind, _, _ in b.events if kind == "acquired")
    assert taken - released <= LOCK_RETRY_INTERVAL + EPS
    assert b.lock.held()["primary"] > a.acquired("primary")[0][1]
    a.lock.want("primary")  # ignored once stopping
    await trio.sleep(3 * TTL)
    assert a.lock.held() == {} and len(a.acquired("primary")) == 1 and a.lost() == []
    assert len(a.calls("grant")) == 1


# --- construction --------------------------------------------------------------------------


def test_arguments_are_checked() -> None:
    client = FakeEtcd().client()
    with pytest.raises(ValueError, match="node"):
        RoleLock(client, "", prefix=PREFIX)
    with pytest.raises(ValueError, match="ttl"):
        RoleLock(client, "a", 0, prefix=PREFIX)
    with pytest.raises(ValueError, match="prefix"):
        RoleLock(client, "a", prefix="")
    with pytest.raises(ValueError, match="role"):
        RoleLock(client, "a", prefix=PREFIX).want("")


async def test_for_spec_talks_to_the_etcd_of_the_url() -> None:
    lock = RoleLock.for_spec(LockSpec("::1", 2379, "x/"), "a", ttl=4.0, http_timeout=0.5)
    client = lock._client
    assert isinstance(client, EtcdClient) and client.base_url == "http://[::1]:2379" and client.timeout == 0.5
    assert (lock.node, lock.ttl, lock.prefix) == ("a", 4.0, "x/")
    await client.aclose()
