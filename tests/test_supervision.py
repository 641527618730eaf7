"""--check and --watchdog (chatterd.supervision), in-process."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from chatterd.supervision import WATCHDOG_EXIT, Check, Watchdog


@pytest.mark.e2e
async def test_check_reports_failing_then_passing_once_each(tmp_path: Path) -> None:
    flag = tmp_path / "ok"
    reports: list[str | None] = []
    check = Check(f"test -e {flag} || {{ echo 'disk full' >&2; exit 3; }}", 0.05, 5.0, reports.append)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(check.run)
        with trio.fail_after(10):
            while not reports:
                await trio.sleep(0.01)
        flag.write_text("")
        with trio.fail_after(10):
            while len(reports) < 2:
                await trio.sleep(0.01)
        await trio.sleep(0.3)  # passing runs report nothing new
        nursery.cancel_scope.cancel()
    assert reports == ["check exited with status 3: disk full", None]
    assert check.runs > 3 and check.failures >= 1


@pytest.mark.e2e
async def test_check_timeout_and_unrunnable_command() -> None:
    check = Check("sleep 5", 1.0, 0.2, lambda _: None)
    assert await check.run_once() == "check timed out after 0.2 s"
    assert await Check("exit 0", 1.0, 1.0, lambda _: None).run_once() is None


async def test_watchdog_exits_when_the_loop_stalls() -> None:
    exits: list[int] = []
    dog = Watchdog(0.3, exit=exits.append)
    dog.start()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dog.beat)
            await trio.sleep(0.6)  # a turning loop keeps it quiet
            assert exits == []
            time.sleep(0.8)  # the loop is stuck in a blocking call
            nursery.cancel_scope.cancel()
    finally:
        dog.stop()
    assert exits == [WATCHDOG_EXIT]
