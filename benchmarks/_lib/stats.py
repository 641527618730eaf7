"""Summaries of measured values, the highest passing rate of a series, number formatting."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Count, median and max (None for no values)."""
    if not values:
        return {"count": 0, "median": None, "max": None}
    return {"count": len(values), "median": statistics.median(values), "max": max(values)}


def summary_p99(values: Sequence[float]) -> dict[str, Any]:
    """``summary`` with the 99th percentile, once there are more than 100 values."""
    extra = {"p99": statistics.quantiles(values, n=100)[98]} if len(values) > 100 else {}
    return summary(values) | extra


def quantiles(values: Sequence[float]) -> dict[str, Any]:
    """Count, min, p10, median, p90, p99, max and mean (just the count for no values)."""
    if not values:
        return {"count": 0}
    v = sorted(values)

    def q(p: float) -> float:
        return v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))]

    return {
        "count": len(v),
        "min": v[0],
        "p10": q(0.10),
        "median": statistics.median(v),
        "p90": q(0.90),
        "p99": q(0.99),
        "max": v[-1],
        "mean": statistics.fmean(v),
    }


def highest_rate(steps: Sequence[T], rate: Callable[[T], int], passes: Callable[[T], bool]) -> int:
    """The highest rate whose step passes, with every lower rate passing too (0: none)."""
    best = 0
    for st in sorted(steps, key=rate):
        if not passes(st):
            break
        best = rate(st)
    return best


def fmt(v: float | None, digits: int = 3) -> str:
    """``v`` with ``digits`` decimals, or "-" for None."""
    return "-" if v is None else f"{v:.{digits}f}"
