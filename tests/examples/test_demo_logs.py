"""The demos' logs, one rule for all: each run writes its processes' logs into a new temporary
directory (or --keep DIR), prints its path when it starts and when it ends, and keeps it.
Measurement scripts (measure.py, many runs) print no log path and delete theirs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
RUNNERS = [
    EXAMPLES / "demo.py",
    EXAMPLES / "dashboard_screenshot.py",
    *sorted(EXAMPLES.glob("*/run.py")),
]


@pytest.mark.parametrize("runner", RUNNERS, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_no_runner_deletes_the_logs_it_shows(runner: Path) -> None:
    source = runner.read_text()
    assert "TemporaryDirectory" not in source, "a run that prints where its logs are keeps them"
    assert "mkdtemp(" in source
    assert "logs kept in" in source or "logs are kept" in source or "it is kept" in source


@pytest.mark.e2e
def test_the_demo_prints_where_its_logs_are_and_keeps_them(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # its temporary directory goes under this test's
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py")], capture_output=True, text=True, env=env, timeout=120, check=True
    ).stdout
    first = re.search(r"starting 3 chatterd nodes on 127\.0\.0\.1 \(logs in (\S+)\)", out)
    last = out.rstrip().splitlines()[-1]
    assert first is not None, out
    assert last == f"  done; logs kept in {first.group(1)}", out
    logs = Path(first.group(1))
    assert logs.parent == tmp_path
    assert sorted(p.name for p in logs.iterdir()) == ["n0.log", "n1.log", "n2.log"]
    for log in logs.iterdir():
        events = [json.loads(line)["event"] for line in log.read_text().splitlines() if line.startswith("{")]
        assert events, log  # the node's structlog events, as JSON lines
