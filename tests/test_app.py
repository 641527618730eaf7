"""--run (chatterd.app), in-process: a fake child on trio's MockClock, no real process.

What the node is told (withhold every candidacy: a reason; offer them again: None), when
chatterd is asked to leave and with which status, the restart policies and their back-off,
and the stop: the signal passed first, SIGKILL after the grace."""

from __future__ import annotations

import signal
from collections.abc import Mapping

import pytest
import trio
from trio.testing import MockClock

from chatterd.app import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    BACKOFF_RESET,
    NOT_STARTED,
    App,
    app_env,
    describe,
    exit_status,
    wants_restart,
)


class FakeChild:
    """A child that ends when the test says (end) or, if it obeys, when signalled."""

    def __init__(self, pid: int, obeys: bool = True) -> None:
        self.pid = pid
        self.obeys = obeys
        self.signals: list[int] = []
        self.returncode: int | None = None
        self._done = trio.Event()

    async def wait(self) -> int:
        await self._done.wait()
        assert self.returncode is not None
        return self.returncode

    def signal(self, sig: int) -> None:
        self.signals.append(sig)
        if self.obeys or sig == signal.SIGKILL:
            self.end(-sig)

    def end(self, returncode: int) -> None:
        if self.returncode is None:
            self.returncode = returncode
            self._done.set()


class Harness:
    """An App with a fake spawn: the children it started (and when), the reports, the exits."""

    def __init__(self, restart: str, obeys: bool = True, fail_spawn: bool = False) -> None:
        self.children: list[FakeChild] = []
        self.spawned_at: list[float] = []
        self.reports: list[str | None] = []
        self.exits: list[int] = []
        self.obeys = obeys
        self.fail_spawn = fail_spawn
        self.app = App("the-app", restart, {}, self.reports.append, self._on_exit, spawn=self._spawn, grace=10.0)

    async def _spawn(self, command: str, env: Mapping[str, str]) -> FakeChild:
        if self.fail_spawn:
            raise FileNotFoundError(2, "No such file or directory")
        child = FakeChild(1000 + len(self.children), self.obeys)
        self.children.append(child)
        self.spawned_at.append(trio.current_time())
        return child

    async def _on_exit(self, status: int) -> None:
        self.exits.append(status)

    async def until(self, n_children: int) -> FakeChild:
        with trio.fail_after(300):
            while len(self.children) < n_children:
                await trio.sleep(0.01)
        await trio.sleep(0)
        return self.children[n_children - 1]


def test_status_and_reason_of_an_end() -> None:
    assert exit_status(3) == 3 and exit_status(-9) == 137 and exit_status(-15) == 143
    assert describe(-9) == "application killed by SIGKILL"
    assert describe(2) == "application exited with status 2"
    assert [p for p in ("no", "on-failure", "always") if wants_restart(p, 0)] == ["always"]
    assert [p for p in ("no", "on-failure", "always") if wants_restart(p, -9)] == ["on-failure", "always"]
    with pytest.raises(ValueError, match="restart policy"):
        App("x", "sometimes", {}, lambda r: None, lambda s: trio.sleep(0))


def test_the_environment_names_the_node_and_its_api() -> None:
    env = app_env("n1", ["http://127.0.0.1:8080"], None)
    assert env["CHATTER_NODE"] == "n1" and env["CHATTER_HTTP_ADDR"] == "127.0.0.1:8080"
    assert "CHATTER_HTTP_ADDR" not in app_env("n1", [], None)


@pytest.mark.parametrize(("returncode", "status"), [(3, 3), (-9, 137), (0, 0)])
async def test_restart_no_withdraws_at_once_then_leaves_with_the_childs_status(
    autojump_clock: MockClock, returncode: int, status: int
) -> None:
    h = Harness("no")
    h.app.hold_until_started()
    assert h.reports == [NOT_STARTED]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.app.run)
        child = await h.until(1)
        assert h.reports == [NOT_STARTED, None]  # running: on offer
        child.end(returncode)
    assert h.reports == [NOT_STARTED, None, describe(returncode)]
    assert h.exits == [status] and len(h.children) == 1


async def test_on_failure_restarts_with_a_doubling_back_off_and_stops_after_a_clean_exit(
    autojump_clock: MockClock,
) -> None:
    h = Harness("on-failure")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.app.run)
        for i in range(1, 8):
            (await h.until(i)).end(1 if i % 2 else -9)
        assert h.reports[-1] is None  # the restarted child offers the roles again
        (await h.until(8)).end(0)
    gaps = [b - a for a, b in zip(h.spawned_at, h.spawned_at[1:], strict=False)]
    want = [min(BACKOFF_MIN * 2**i, BACKOFF_MAX) for i in range(7)]
    assert gaps == pytest.approx(want, abs=0.05)
    assert h.exits == [0]
    assert h.reports.count(None) == 8
    assert describe(-9) in h.reports and describe(1) in h.reports


async def test_the_back_off_resets_after_a_long_run_and_always_restarts_clean_exits(
    autojump_clock: MockClock,
) -> None:
    h = Harness("always")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.app.run)
        (await h.until(1)).end(0)
        (await h.until(2)).end(0)  # back-off 0.5, then 1.0 for the next
        child = await h.until(3)
        await trio.sleep(BACKOFF_RESET + 1)
        child.end(0)  # ran long enough: BACKOFF_MIN again
        await h.until(4)
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in zip(h.spawned_at, h.spawned_at[1:], strict=False)]
    assert gaps[0] == pytest.approx(BACKOFF_MIN, abs=0.05) and gaps[1] == pytest.approx(2 * BACKOFF_MIN, abs=0.05)
    assert gaps[2] == pytest.approx(BACKOFF_RESET + 1 + BACKOFF_MIN, abs=0.05)
    assert h.exits == []


async def test_stop_passes_the_signal_first_and_nothing_restarts(autojump_clock: MockClock) -> None:
    h = Harness("always")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.app.run)
        child = await h.until(1)
        await h.app.stop(signal.SIGINT)
        assert child.signals == [signal.SIGINT]
        assert h.reports[-1] == describe(-signal.SIGINT)  # withdrawn before stop() returns
    assert len(h.children) == 1 and h.exits == []


async def test_a_child_that_ignores_the_signal_is_killed_after_the_grace(autojump_clock: MockClock) -> None:
    h = Harness("no", obeys=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.app.run)
        child = await h.until(1)
        t0 = trio.current_time()
        await h.app.stop()
        assert trio.current_time() - t0 == pytest.approx(10.0, abs=0.05)
    assert child.signals == [signal.SIGTERM, signal.SIGKILL]
    assert h.exits == []  # stopping: chatterd is leaving already


async def test_stop_during_the_back_off_ends_at_once(autojump_clock: MockClock) -> None:
    h = Harness("on-failure")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.app.run)
        (await h.until(1)).end(1)
        await trio.sleep(0.1)  # in the back-off
        t0 = trio.current_time()
        await h.app.stop()
    assert trio.current_time() - t0 < 0.05 and len(h.children) == 1


async def test_a_command_that_cannot_start_counts_as_exit_127(autojump_clock: MockClock) -> None:
    h = Harness("no", fail_spawn=True)
    await h.app.run()
    assert h.exits == [127]
    assert h.reports == ["cannot start application: No such file or directory"]


@pytest.mark.parametrize(
    ("argv", "mentions"),
    [
        (["--restart", "always"], "--restart needs --run"),
        (["--lease-ttl", "2"], "--lease-ttl needs at least one --role"),
        (["--lease-ttl", "2", "--role", "x"], "--lease-ttl needs the HTTP API"),
    ],
)
def test_options_that_need_another_are_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], mentions: str
) -> None:
    from chatterd import cli

    assert cli.main(["--listen", "127.0.0.1:0", "--http", "off", *argv]) == 2  # before the node starts
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("chatterd: error: ") and mentions in err
