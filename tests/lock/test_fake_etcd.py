"""The fake etcd answers as the real one does (the shared checks of etcd_contract.py, which
tests/e2e/test_etcd_lock.py runs against etcd), and its faults and lease clock work."""

from __future__ import annotations

import pytest
import trio
from etcd_contract import check_keys, check_leases, check_paused, check_refused
from fake_etcd import FakeEtcd
from trio.testing import MockClock

from chatterd.lock.etcd import EtcdUnavailable


async def test_fake_passes_the_contract(autojump_clock: MockClock) -> None:
    etcd = FakeEtcd()
    client = etcd.client()
    await check_leases(client)
    await check_keys(client, "contract/")
    await check_paused(client, etcd.pause, etcd.resume)
    client.link = "refused"
    await check_refused(client)


async def test_leases_expire_ttl_after_the_last_keepalive_with_their_keys(autojump_clock: MockClock) -> None:
    etcd = FakeEtcd()
    client = etcd.client()
    lease, _ = await client.grant(5)
    ok, rev, _ = await client.create("k", "a", lease)
    assert ok
    await trio.sleep(4)
    renewed = trio.current_time()
    assert await client.keepalive(lease) == 5
    await trio.sleep_until(renewed + 4.999)
    assert etcd.get("k") is not None
    await trio.sleep_until(renewed + 5)
    assert etcd.get("k") is None and etcd.lease(lease) is None
    assert etcd.expired == [lease]
    assert etcd.revision == rev + 1  # the expiry deleted the key


async def test_restart_revives_leases_and_their_keys(autojump_clock: MockClock) -> None:
    etcd = FakeEtcd()
    client = etcd.client()
    lease, _ = await client.grant(2)
    await client.create("k", "a", lease)
    etcd.stop()
    with pytest.raises(EtcdUnavailable, match="refused"):
        await client.keepalive(lease)
    await trio.sleep(60)  # down for longer than the TTL
    etcd.start()
    started = trio.current_time()
    assert etcd.get("k") is not None
    await trio.sleep_until(started + 2 + etcd.election_timeout - 0.01)
    assert etcd.get("k") is not None
    await trio.sleep_until(started + 2 + etcd.election_timeout)
    assert etcd.get("k") is None


async def test_pause_answers_waiting_calls_at_resume_and_can_carry_out_late_ones(autojump_clock: MockClock) -> None:
    etcd = FakeEtcd(timeout=1.0)
    client = etcd.client()
    lease, _ = await client.grant(10)
    answers: list[object] = []

    async def create(key: str) -> None:
        try:
            answers.append(await client.create(key, "a", lease))
        except EtcdUnavailable as e:
            answers.append(e)

    etcd.pause(carry_out_late=True)
    await create("late")  # times out: carried out at resume all the same
    async with trio.open_nursery() as nursery:
        nursery.start_soon(create, "waiting")
        await trio.sleep(0.5)
        etcd.resume()
    assert isinstance(answers[0], EtcdUnavailable)
    late, waiting = etcd.get("late"), etcd.get("waiting")
    assert late is not None and waiting is not None
    assert answers[1] == (True, waiting.create_revision, None)
    assert waiting.create_revision == late.create_revision + 1


async def test_a_paused_etcd_that_is_killed_fails_the_waiting_calls(autojump_clock: MockClock) -> None:
    etcd = FakeEtcd(timeout=1.0)
    client = etcd.client()
    etcd.pause()
    async with trio.open_nursery() as nursery:

        async def grant() -> None:
            with pytest.raises(EtcdUnavailable, match="disconnected"):
                await client.grant(5)

        nursery.start_soon(grant)
        await trio.sleep(0.5)
        etcd.stop()
    etcd.start()
    assert etcd.leases == {}


async def test_one_clients_link_hangs_or_refuses_or_loses_answers(autojump_clock: MockClock) -> None:
    etcd = FakeEtcd(timeout=1.0)
    cut, ok = etcd.client("cut"), etcd.client("ok")
    lease, _ = await ok.grant(10)
    cut.link = "hang"
    start = trio.current_time()
    with pytest.raises(EtcdUnavailable, match="no answer"):
        await cut.keepalive(lease, timeout=0.25)
    assert trio.current_time() - start == 0.25
    cut.link = "refused"
    with pytest.raises(EtcdUnavailable, match="refused"):
        await cut.grant(5)
    assert etcd.leases.keys() == {lease}  # neither call reached etcd
    cut.link = "up"
    cut.lose_answers = {"create"}
    with pytest.raises(EtcdUnavailable, match="no answer"):
        await cut.create("k", "cut", lease)
    kv = await ok.get("k")
    assert kv is not None and kv.value == "cut"  # carried out all the same
    assert [c.name for c in etcd.calls if c.client == "cut"] == ["keepalive", "grant", "create"]
