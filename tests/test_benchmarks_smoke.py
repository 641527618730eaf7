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

SMOKE = {
    "latency": ("--n 3 --repeat 1 --messages 2 --idle 1 --settle 0.2", "dead after kill -9"),
    "compare": ("--n 3 --repeat 1 --messages 2 --idle 1 --settle 0.2 --systems chatter --no-bytes", "kill -9"),
    "sim_scale": ("--sizes 30 --messages 2 --skip loss partition tradeoff", "size"),
    "throughput": (
        "--parts core,process --core-count 500 --rates 1000 --series new-user --step 1 --no-py-spy",
        "sustained",
    ),
    "scale": ("--n 5 --minutes 0.1 --cpu-window 2 --settle 1", "false failures"),
}


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_benchmark_smoke(name: str, tmp_path: Path) -> None:
    args, expect = SMOKE[name]
    out = tmp_path / "out.json"
    cmd = [sys.executable, "-m", f"benchmarks.{name}", *args.split(), "--json", str(out)]
    if name == "scale":
        cmd += ["--log-dir", str(tmp_path / "logs")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    assert expect in r.stdout
    data = json.loads(out.read_text())
    assert data
    if name == "sim_scale":
        row = data["size"][0]
        assert row["n"] == 30 and row["detection"]["reported"] == 29 and row["false_deaths"] == 0
