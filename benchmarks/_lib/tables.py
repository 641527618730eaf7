"""The side-by-side tables of ``compare`` and ``soak``: one column per system and row source
(``serf`` and ``serf[log]`` from the same run), one line per figure."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Result = dict[str, Any]
Column = tuple[str, Result, str]  # (label, one system's result, row source)
Figure = tuple[str, Callable[[Result, str], str]]  # (label, the cell for a result and a source)


def columns(results: Sequence[Result]) -> list[Column]:
    """(label, result, source) per column: one per system, plus serf[log] and the like."""
    out = []
    for res in results:
        for source in res.get("sources", ["main"]):
            label = res["system"] if source == "main" else f"{res['system']}[{source}]"
            out.append((label, res, source))
    return out


def main_only(source: str, value: str) -> str:
    """A figure measured once per run: shown in the main column, "=" in the others."""
    return value if source == "main" else "="


def dig(d: Any, *keys: str) -> Any:
    """``d[k1][k2]...``, None where a level is missing."""
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def render(corner: str, label_width: int, results: Sequence[Result], figures: Sequence[Figure]) -> list[str]:
    """The head line and one line per figure."""
    cols = columns(results)
    width = max(11, *(len(label) + 2 for label, _, _ in cols))
    lines = [f"{corner:<{label_width}}" + "".join(f"{label:>{width}}" for label, _, _ in cols)]
    for label, cell in figures:
        lines.append(f"{label:<{label_width}}" + "".join(f"{cell(r, s):>{width}}" for _, r, s in cols))
    return lines
