"""Pieces of a benchmark's phases: waiting for a condition, picking victims, CPU over a window,
processes that keep the CPU busy."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import trio

from benchmarks._lib.procfs import busy_pct, cpu_pct, cpu_ticks, machine_busy, self_cpu

T = TypeVar("T")
POLL = 0.2  # seconds between polls while waiting (the figures come from the nodes' own timestamps)


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, interval: float = POLL) -> bool:
    """Poll ``check`` until true; False if ``timeout`` seconds went by first."""
    with trio.move_on_after(timeout):
        while not await check():
            await trio.sleep(interval)
        return True
    return False


def pick_victims(nodes: Sequence[T], repeat: int, rng: random.Random) -> list[T]:
    """``repeat`` random nodes, all different while there are enough of them."""
    out: list[T] = []
    while len(out) < repeat:
        out += rng.sample(list(nodes), min(len(nodes), repeat - len(out)))
    return out


@dataclass(frozen=True)
class CpuSample:
    """At one moment: CPU ticks of named processes, the machine's jiffies, this process's CPU
    seconds, the monotonic clock. Two samples give the CPU used between them (``cpu_use``)."""

    ticks: dict[str, int]
    busy: tuple[int, int]
    self_s: float
    t: float

    @classmethod
    def take(cls, pids: Mapping[str, int]) -> CpuSample:
        ticks = {name: cpu_ticks(pid) for name, pid in pids.items()}
        return cls(ticks, machine_busy(), self_cpu(), time.monotonic())


@dataclass(frozen=True)
class CpuUse:
    seconds: float
    per_process: dict[str, float]  # % of one core, for the processes in both samples
    machine_pct: float  # the whole machine, % of all cores
    self_pct: float  # this process, % of one core


def cpu_use(start: CpuSample, end: CpuSample) -> CpuUse:
    elapsed = end.t - start.t
    per = {name: cpu_pct(end.ticks[name] - start.ticks[name], elapsed) for name in start.ticks if name in end.ticks}
    return CpuUse(elapsed, per, busy_pct(start.busy, end.busy), 100.0 * (end.self_s - start.self_s) / elapsed)


async def idle_cpu(pids: Mapping[str, int], seconds: float) -> CpuUse:
    """CPU of the processes over ``seconds`` of doing nothing here (nothing polls them)."""
    start = CpuSample.take(pids)
    await trio.sleep(seconds)
    return cpu_use(start, CpuSample.take(pids))


@contextlib.contextmanager
def cpu_hogs(count: int, say: Callable[[str], None]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` busy-looping processes, to saturate the machine; stopped by PID on the way out."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL))
        if count:
            say(f"{count} CPU hog processes started: {[p.pid for p in procs]}")
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
        for p in procs:
            p.wait()
