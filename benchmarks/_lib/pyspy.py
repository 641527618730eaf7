"""Sampling a process with py-spy (never paused: ``--nonblocking``) and summing the samples."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

# Groups of frames whose inclusive share of the samples is reported (a sample counts once per group).
SPY_GROUPS: dict[str, Callable[[str], bool]] = {
    "Runtime._protocol_loop (all protocol work)": lambda f: f.startswith("Runtime._protocol_loop "),
    "  Node.receive": lambda f: f.startswith("Node.receive "),
    "    wire.decode": lambda f: f.startswith("decode (chatterd/core/wire.py"),
    "      wire.depth": lambda f: f.startswith("depth (chatterd/core/bounds.py"),
    "    Rumors.on_rumor": lambda f: f.startswith("Rumors.on_rumor "),
    "  Node.handle_timers": lambda f: f.startswith("Node.handle_timers "),
    "    Gossip.flush": lambda f: f.startswith("Gossip.flush "),
    "  Runtime._pump (send, event rows, logs)": lambda f: f.startswith("Runtime._pump "),
    "    Runtime._record (event rows, logs)": lambda f: f.startswith("Runtime._record "),
    "logging (structlog + stdlib logging)": lambda f: "structlog/" in f or "logging/" in f,
    "HTTP API (hypercorn, starlette, api.py)": lambda f: any(m in f for m in ("hypercorn/", "starlette/", "api.py")),
}
IDLE_FRAME = "EpollIOManager.get_events "


async def py_spy(pid: int, seconds: float, raw: Path, delay: float = 0.0, rate: int = 250) -> dict[str, Any]:
    """Sample a process with py-spy (non-blocking: the process is never paused) and summarise."""
    await trio.sleep(delay)
    argv = ["py-spy", "record", "--nonblocking", "--format", "raw", "--rate", str(rate)]
    argv += ["--duration", str(max(1, round(seconds))), "--pid", str(pid), "--output", str(raw)]
    proc = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    result: dict[str, Any] = {"raw": str(raw), "rc": proc.returncode}
    if proc.returncode != 0:
        result["error"] = proc.stderr.decode(errors="replace").strip()[-500:]
    if raw.exists():
        result |= collapse_stacks(raw.read_text())
    return result


def collapse_stacks(text: str, top: int = 15) -> dict[str, Any]:
    """Own and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    total = idle = 0
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        if frames[-1].startswith(IDLE_FRAME):  # the event loop waiting in epoll: not work
            idle += count
            continue
        total += count
        own[frames[-1]] += count
        for g, match in SPY_GROUPS.items():
            if any(match(f) for f in frames):
                groups[g] += count
    if not total:
        return {"samples": 0, "idle_samples": idle}
    return {
        "samples": total,
        "idle_samples": idle,
        "own": [(f, c / total) for f, c in own.most_common(top)],
        "groups": [(g, groups[g] / total) for g in SPY_GROUPS],
    }


def _frame(f: str) -> str:
    """'func (path/file.py:123)' → 'func (path/file.py)': samples add up per function, not per line."""
    name, _, where = f.partition(" (")
    path = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    return f"{name} ({path})" if where else name


def spy_lines(spy: dict[str, Any], head: str, *, own_top: int | None = None, compact: bool = False) -> list[str]:
    """The report of one sampling: ``head``, the groups' inclusive shares, the top own times."""
    if not spy.get("samples"):
        return [f"  py-spy: no samples ({spy.get('error', 'unknown error')})"]
    first = (
        f"  {head}: {spy['samples']} busy samples, {spy['idle_samples']} idle ones left out (raw stacks: {spy['raw']})"
    )
    if compact:
        lines = [first + "; inclusive shares:"]
    else:
        lines = [first, "    inclusive share of the samples (time in the function and what it calls):"]
    lines += [f"    {100 * share:>6.1f}%  {g}" for g, share in spy["groups"]]
    lines.append("    own time (leaf function of the sample):")
    lines += [f"    {100 * share:>6.1f}%  {f}" for f, share in spy["own"][:own_top]]
    return lines
