"""Draw the simulator's figures (benchmarks/sim_scale.py output) as PNGs in docs/.

python -m benchmarks.plot_sim docs/sim_scale.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def _series(rows: list[dict[str, Any]], *path: str) -> list[float | None]:
    out = []
    for r in rows:
        v: Any = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        out.append(v)
    return out


def _nan(values: list[float | None]) -> list[float]:
    """None (never reached) as NaN: a gap in the line."""
    return [v if v is not None else float("nan") for v in values]


def _save(fig: Figure, path: Path, written: list[Path]) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    written.append(path)


def plot_size(rows: list[dict[str, Any]], path: Path, written: list[Path]) -> None:
    ns = [r["n"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("p99_max_s", "99 %"), ("p9999_max_s", "99.99 %"), ("p100_max_s", "100 %")):
        a.plot(ns, _nan(_series(rows, "dissemination", key)), "o-", label=label)
    a.plot(ns, _nan(_series(rows, "detection", "max_s")), "s--", label="kill → dead everywhere (max)")
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel("cluster size N")
    a.set_ylabel("seconds")
    a.set_title("Dissemination (slowest of 5 messages) and detection")
    a.legend()
    a.grid(True, which="both", alpha=0.3)
    b.plot(ns, _nan(_series(rows, "load", "bytes_per_node_s")), "o-", label="bytes/s per node")
    b2 = b.twinx()
    b2.plot(
        ns, _nan(_series(rows, "load", "datagrams_per_node_s")), "s--", color="tab:orange", label="datagrams/s per node"
    )
    b.set_xscale("log")
    b.set_ylim(bottom=0)
    b2.set_ylim(bottom=0)
    b.set_xlabel("cluster size N")
    b.set_ylabel("bytes/s per node (idle cluster)")
    b2.set_ylabel("datagrams/s per node")
    b.set_title("Per-node load stays flat as N grows")
    b.legend(loc="lower left")
    b2.legend(loc="lower right")
    _save(fig, path, written)


def plot_loss(rows: list[dict[str, Any]], path: Path, written: list[Path]) -> None:
    loss = [100 * r["loss"] for r in rows]
    fig, a = plt.subplots(figsize=(6.5, 4))
    a.plot(loss, _nan(_series(rows, "detection", "max_s")), "s-", label="kill → dead everywhere (max), s")
    a.plot(loss, _nan(_series(rows, "dissemination", "p100_max_s")), "o-", label="message → 100 % of nodes (max), s")
    a.plot(loss, [r["false_deaths"] for r in rows], "x-", label="false deaths")
    a.set_xlabel("UDP loss, %")
    a.set_title(f"N = {rows[0]['n']}: timings against loss")
    a.grid(True, alpha=0.3)
    a.legend()
    _save(fig, path, written)


def plot_tradeoff(rows: list[dict[str, Any]], path: Path, written: list[Path]) -> None:
    """False suspicions against detection time, one line per loss rate over the lan
    detector's suspect_after values; the default circled, the detector before it (classic,
    heartbeats every 0.25 s without probes) as a cross of the same colour."""
    fig, a = plt.subplots(figsize=(7, 4.5))
    for loss in sorted({r["loss"] for r in rows}):
        sub = [r for r in rows if r["loss"] == loss and r.get("design", "lan") == "lan"]
        line = a.plot(
            [r["detection_max_s"] for r in sub],
            [r["suspicions_per_min"] + 0.01 for r in sub],
            "o-",
            label=f"{loss:.0%} loss",
        )[0]
        for r in sub:
            xy = (r["detection_max_s"], r["suspicions_per_min"] + 0.01)
            a.annotate(f"{r['suspect_after']:g} s", xy, fontsize=7, xytext=(3, 3), textcoords="offset points")
            if r.get("default"):
                a.plot(*xy, "o", ms=14, mfc="none", mec="black")
        for r in (r for r in rows if r["loss"] == loss and r.get("design") == "classic"):
            a.plot(r["detection_max_s"], r["suspicions_per_min"] + 0.01, "x", ms=9, mew=2, color=line.get_color())
    a.plot([], [], "o", ms=14, mfc="none", mec="black", label="default (suspect_after 1.75 s)")
    a.plot([], [], "x", ms=9, mew=2, color="grey", label="before issue #13 (0.25 s heartbeats, no probes)")
    a.set_yscale("log")
    a.set_xlabel("kill → dead everywhere, max (s)")
    a.set_ylabel("false suspicions per minute, cluster-wide (+ 0.01)")
    a.set_title("suspect_after: detection against false suspicions (N = 100, probes on)")
    a.grid(True, which="both", alpha=0.3)
    a.legend(fontsize=7)
    _save(fig, path, written)


PLOTS = (
    ("size", "sim_scale.png", plot_size),
    ("loss", "sim_loss.png", plot_loss),
    ("tradeoff", "sim_tradeoff.png", plot_tradeoff),
)


def plot(data: dict[str, Any], outdir: Path) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for key, name, draw in PLOTS:
        if data.get(key):
            draw(data[key], outdir / name, written)
    return written


def main() -> None:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/sim_scale.json")
    for p in plot(json.loads(src.read_text()), src.parent):
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
