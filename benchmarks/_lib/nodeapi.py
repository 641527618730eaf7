"""chatterd nodes through their HTTP API (event rows read incrementally, health and counters)
and their JSON log files."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import trio

from chatterd.testing import LocalNode


class EventLog:
    """Every event row of every node process seen so far, as (observer name, row)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, dict[str, Any]]] = []
        self.problems: list[str] = []
        self._last: dict[int, int] = {}  # pid → last seq read from that process

    async def scan(self, nodes: Sequence[LocalNode]) -> None:
        for node in nodes:
            if not node.running() or node.pid is None:
                continue
            last = self._last.get(node.pid, 0)
            rows = None
            for _ in range(3):
                rows = await node.try_get(f"/v1/events?since={last}")
                if rows is not None:
                    break
                await trio.sleep(0.1)
            if rows is None:
                self.problems.append(f"could not read the events of {node.name} (pid {node.pid})")
                continue
            if not rows:
                continue
            if rows[0]["seq"] != last + 1:
                self.problems.append(f"{node.name}: event rows {last + 1}..{rows[0]['seq'] - 1} lost (buffer full)")
            self.rows.extend((node.name, r) for r in rows)
            self._last[node.pid] = rows[-1]["seq"]

    def since(self, mark: int) -> list[tuple[str, dict[str, Any]]]:
        return self.rows[mark:]

    async def follow(self, node: LocalNode, stop: trio.Event, every: float, took: list[float]) -> None:
        """Read the node's new rows every ``every`` seconds until ``stop``; each read's seconds in ``took``."""
        while not stop.is_set():
            s = time.monotonic()
            await self.scan([node])
            took.append(time.monotonic() - s)
            with trio.move_on_after(every):
                await stop.wait()


@dataclass
class Window:
    """A node stopped at t_kill and started again at t_restart (Unix times)."""

    name: str
    t_kill: float
    t_restart: float

    def covers(self, name: str, t: float) -> bool:
        return self.name == name and self.t_kill <= t <= self.t_restart


def false_events(log: EventLog, kind: str, windows: Sequence[Window]) -> list[dict[str, Any]]:
    """Events of ``kind`` about a node that was not stopped at the time they were recorded."""
    out = []
    for obs, r in log.rows:
        if r["kind"] != kind:
            continue
        t = r["received_at"]
        if not any(w.covers(r["origin"], t) for w in windows):
            out.append({"observer": obs, "about": r["origin"], "received_at": t, "payload": r["payload"]})
    return out


async def health(node: LocalNode, tries: int = 3, interval: float = 0.2) -> dict[str, Any] | None:
    """The node's /v1/health (also when degraded), or None if it did not answer ``tries`` times."""
    for _ in range(tries):
        h = await node.try_get("/v1/health")
        if isinstance(h, dict) and "members" in h:
            return h
        await trio.sleep(interval)
    return None


async def counters(node: LocalNode) -> Counter[str]:
    """The node's /v1/health counters (absent ones read as 0); raises if it does not answer."""
    h = await health(node, tries=20, interval=0.1)
    if h is None:
        raise RuntimeError(f"{node.name}: /v1/health does not answer")
    return Counter(h["counters"])


async def all_counters(nodes: Sequence[LocalNode]) -> dict[str, Counter[str]]:
    """Every answering node's /v1/health counters."""
    out: dict[str, Counter[str]] = {}
    for n in nodes:
        h = await health(n)
        if h is not None:
            out[n.name] = Counter(h["counters"])
    return out


async def wait_delivered(nodes: Sequence[LocalNode], c0: dict[str, Counter[str]], want: int, timeout: float) -> None:
    """Until every node's ``delivered`` counter is ``want`` above ``c0``, or it stops moving for 5 s."""
    deadline = time.monotonic() + timeout
    last_total, still = -1, 0.0
    while time.monotonic() < deadline:
        got = {n.name: (await counters(n))["delivered"] - c0[n.name]["delivered"] for n in nodes}
        if all(v >= want for v in got.values()):
            break
        tot = sum(got.values())
        if tot == last_total:
            still += 0.5
            if still >= 5:
                break
        else:
            still = 0.0
        last_total = tot
        await trio.sleep(0.5)


def log_record(line: str) -> tuple[float, dict[str, Any]] | None:
    """(Unix time, record) of one line of a node's JSON log, or None if it is not one."""
    try:
        d = json.loads(line)
        return datetime.fromisoformat(d["timestamp"]).timestamp(), d
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def log_lines(path: Path, t_from: float, t_to: float, events: set[str]) -> list[dict[str, Any]]:
    """The log records of ``events`` between two Unix times (``t`` first; no timestamp, level, logger)."""
    out = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not any(e in line for e in events):
                    continue
                rec = log_record(line)
                if rec is None:
                    continue
                t, d = rec
                if t_from <= t <= t_to and d.get("event") in events:
                    out.append({"t": t} | {k: v for k, v in d.items() if k not in ("timestamp", "level", "logger")})
    except OSError:
        pass
    return out


def count_log_lines(nodes: Sequence[LocalNode], event: str) -> Counter[str]:
    """Lines with ``"event": "<event>"`` per node's log (e.g. timers_late)."""
    needle = f'"event": "{event}"'
    counts: Counter[str] = Counter()
    for n in nodes:
        try:
            with open(n.log_path, encoding="utf-8", errors="replace") as f:
                counts[n.name] = sum(1 for line in f if needle in line)
        except OSError:
            pass
    return counts
