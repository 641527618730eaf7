"""The protocol loop never spins: a step that keeps raising is logged with a rate limit,
backs off, and ends the node with a clear status (chatterd/loopguard.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio

from chatterd.core.config import LAN
from chatterd.loopguard import LoopFailed, LoopGuard
from chatterd.runtime import Options, Runtime, exception_of


class FakeLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def exception(self, event: str, **kw: Any) -> None:
        self.lines.append((event, kw))


def test_backoff_doubles_to_its_cap_and_success_resets_it() -> None:
    t = [0.0]
    g = LoopGuard(FakeLog(), "x", lambda: t[0], backoff_min=0.05, backoff_max=1.0, fatal=None)
    pauses = [g.failed() for _ in range(8)]
    assert pauses == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    g.ok()
    assert g.failed() == 0.05
    assert g.failures == 9


def test_tracebacks_are_rate_limited_and_count_what_they_left_out() -> None:
    t = [0.0]
    log = FakeLog()
    g = LoopGuard(log, "timers_failed", lambda: t[0], log_interval=1.0, fatal=None)
    for _ in range(1000):  # a burst within one interval: one line
        g.failed()
        t[0] += 0.0005
    assert len(log.lines) == 1
    t[0] = 1.0
    g.failed()
    assert len(log.lines) == 2
    assert log.lines[1] == ("timers_failed", {"in_a_row": 1001, "not_logged": 999})


def test_it_gives_up_after_fatal_failures_in_a_row() -> None:
    g = LoopGuard(FakeLog(), "x", lambda: 0.0, fatal=3)
    g.failed()
    g.failed()
    g.ok()  # a success in between: the count starts again
    g.failed()
    g.failed()
    with pytest.raises(LoopFailed, match="3 failures in a row"):
        g.failed()


async def test_a_raising_timer_handler_costs_bounded_cpu_then_ends_the_node() -> None:
    """Before the guard, a handle_timers that raised left the deadline in the past: ~38,000
    turns a second, each logging a traceback. Now the loop pauses (0.05 s doubling), so it
    turns a handful of times a second, and after ``loop_failures_fatal`` failures it exits."""
    rt = Runtime(Options(listen=("127.0.0.1", 0), name="broken", config=LAN, http=None, loop_failures_fatal=8))
    calls = 0

    def broken(now: float) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("bug in a timer")

    cpu_at_start = 0.0
    with pytest.raises(BaseException) as caught:  # the nursery wraps it in a group
        async with trio.open_nursery() as nursery:
            await nursery.start(rt.run)
            assert rt.node is not None
            rt.node.handle_timers = broken  # type: ignore[method-assign]
            cpu_at_start = time.process_time()
            rt.kick()
            with trio.fail_after(10):  # 0.05 + 0.1 + ... + 1.0 ≈ 4.2 s to reach 8 failures
                await trio.sleep_forever()
    cpu = time.process_time() - cpu_at_start
    assert exception_of(caught.value, LoopFailed) is not None, caught.value
    assert calls == 8
    assert rt.stats["internal_errors"] == 8
    assert cpu < 1.0, f"the failing loop used {cpu:.2f} s of CPU in ~4 s"  # a spin uses all of it
