"""--lease-ttl (chatterd.leases) and --exit-with-parent's poll (chatterd.parent), in-process on
trio's MockClock: what the node is told, and when."""

from __future__ import annotations

import pytest
import trio
from trio.testing import MockClock

from chatterd.leases import EXPIRED, NO_LEASE, Leases, UnknownRole, lease_answer
from chatterd.parent import ParentWatch


def make(ttl: float = 1.0) -> tuple[Leases, list[tuple[str, str | None]]]:
    holds: list[tuple[str, str | None]] = []
    leases = Leases(["leader", "backup"], ttl, lambda role, reason: holds.append((role, reason)))
    return leases, holds


def test_withheld_until_renewed_then_offered_until_the_ttl_runs_out() -> None:
    leases, holds = make()
    leases.hold_all()
    assert holds == [("leader", NO_LEASE), ("backup", NO_LEASE)]
    assert leases.renew("leader", 10.0) == ["leader"]
    assert holds[-1] == ("leader", None)
    leases.renew("leader", 10.5)  # a renewal of a fresh lease tells the node nothing new
    assert len(holds) == 3
    assert leases.expire(11.4) == [] and leases.expires_in("leader", 11.4) == pytest.approx(0.1)
    assert leases.expire(11.5) == ["leader"] and holds[-1] == ("leader", EXPIRED)
    assert leases.expire(20.0) == []  # withheld once
    assert leases.expires_in("leader", 20.0) == 0.0 and leases.expiries == 1


def test_renew_all_and_an_unknown_role() -> None:
    leases, holds = make()
    assert leases.renew_all(1.0) == ["leader", "backup"]
    assert holds == [("leader", None), ("backup", None)]
    with pytest.raises(UnknownRole):
        leases.renew("nope", 1.0)
    answer = lease_answer(leases, "leader", {"leader": 7}, 1.25)
    assert answer == {"role": "leader", "ttl": 1.0, "expires_in": 0.75, "held_here": True, "epoch": 7}
    assert lease_answer(leases, "backup", {}, 1.25) == {
        "role": "backup",
        "ttl": 1.0,
        "expires_in": 0.75,
        "held_here": False,
    }


def test_the_check_period() -> None:
    assert make(0.5)[0].period == pytest.approx(0.05)
    assert make(30.0)[0].period == pytest.approx(0.1)


async def test_the_timer_releases_a_role_within_the_ttl_and_a_tenth(autojump_clock: MockClock) -> None:
    leases, holds = make(2.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(leases.run)
        t0 = trio.current_time()
        leases.renew("leader", t0)
        while holds[-1] != ("leader", EXPIRED):
            await trio.sleep(0.01)
        took = trio.current_time() - t0
        nursery.cancel_scope.cancel()
    assert 2.0 <= took <= 2.0 + leases.period + 0.02


async def test_the_parent_watch_calls_once_when_the_ppid_changes(autojump_clock: MockClock) -> None:
    ppid = [100]
    gone: list[float] = []

    async def on_gone() -> None:
        gone.append(trio.current_time())

    watch = ParentWatch(100, on_gone, getppid=lambda: ppid[0], interval=0.5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: watch.run(set_pdeathsig=False))
        await trio.sleep(3.0)
        assert gone == []
        t0 = trio.current_time()
        ppid[0] = 1  # adopted by init: the parent died
        await trio.sleep(2.0)
    assert len(gone) == 1 and gone[0] - t0 <= 0.5 + 0.01


async def test_a_parent_gone_before_the_watch_started_is_seen_at_once(autojump_clock: MockClock) -> None:
    gone: list[bool] = []

    async def on_gone() -> None:
        gone.append(True)

    t0 = trio.current_time()
    await ParentWatch(100, on_gone, getppid=lambda: 1).run(set_pdeathsig=False)
    assert gone == [True] and trio.current_time() - t0 < 0.01
