"""A quick run of each benchmark's harness, so CI notices when one breaks.

The full runs (minutes to an hour, figures in docs/benchmarks.md) are not part of the suite;
these use tiny sizes and check that each command completes and reports its figures.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent


def run(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert r.returncode == 0, f"{args}: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r


def test_latency_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "latency.json"
    r = run(
        [
            "benchmarks.latency",
            "--n",
            "3",
            "--repeat",
            "1",
            "--messages",
            "2",
            "--idle",
            "1",
            "--settle",
            "0.2",
            "--json",
            str(out),
        ]
    )
    assert "dead after kill -9" in r.stdout
    assert json.loads(out.read_text())


def test_compare_benchmark_smoke_chatter_only(tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    r = run(
        [
            "benchmarks.compare",
            "--n",
            "3",
            "--repeat",
            "1",
            "--messages",
            "2",
            "--idle",
            "1",
            "--settle",
            "0.2",
            "--systems",
            "chatter",
            "--no-bytes",
            "--json",
            str(out),
        ]
    )
    assert "kill -9" in r.stdout
    assert json.loads(out.read_text())


def test_simulator_scale_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "sim.json"
    run(
        [
            "benchmarks.sim_scale",
            "--sizes",
            "30",
            "--messages",
            "2",
            "--skip",
            "loss",
            "partition",
            "tradeoff",
            "--json",
            str(out),
        ]
    )
    data = json.loads(out.read_text())
    row = data["size"][0]
    assert row["n"] == 30 and row["detection"]["reported"] == 29 and row["false_deaths"] == 0


def test_throughput_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "tp.json"
    r = run(
        [
            "benchmarks.throughput",
            "--parts",
            "core,process",
            "--core-count",
            "500",
            "--rates",
            "1000",
            "--series",
            "new-user",
            "--step",
            "1",
            "--no-py-spy",
            "--json",
            str(out),
        ]
    )
    assert "sustained" in r.stdout
    assert json.loads(out.read_text())


def test_scale_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    r = run(
        [
            "benchmarks.scale",
            "--n",
            "5",
            "--minutes",
            "0.1",
            "--cpu-window",
            "2",
            "--settle",
            "1",
            "--log-dir",
            str(tmp_path / "logs"),
            "--json",
            str(out),
        ]
    )
    assert "false failures" in r.stdout
    assert json.loads(out.read_text())
