"""The hosts tests: chatterd on Linux network namespaces (chatterd.testing.hosts). They need root
and ``ip netns``/iptables; elsewhere each is skipped, saying why (CI runs them as root)."""

from __future__ import annotations

import functools
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from chatterd.testing.hosts import hosts_problem

LOG_TAIL_LINES = 12
_DIRS = pytest.StashKey[Path]()


@functools.cache
def _problem() -> str | None:
    return hosts_problem()


@pytest.fixture(autouse=True)
def _needs_netns(request: pytest.FixtureRequest) -> None:
    """Skip a ``netns`` test where namespaces cannot be made. Checked at setup, not collection:
    the check runs ``ip``, and collection (``pytest -m "not e2e"`` too) must start no process."""
    if request.node.get_closest_marker("netns") is None:
        return
    why = _problem()
    if why is not None:
        pytest.skip(f"hosts harness unavailable: {why}")


@pytest.fixture
def hosts_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """Where a test's cluster keeps its logs and data dirs; a failed test reports each log's tail."""
    request.node.stash[_DIRS] = tmp_path
    yield tmp_path


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    report = yield
    base = item.stash.get(_DIRS, None)
    if isinstance(report, pytest.TestReport) and report.failed and base is not None:
        tails = []
        for log in sorted(base.glob("h*.log")) + sorted(base.glob("seq/e*.log")):  # seq/: the sequencer's engines
            lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            tails.append(f"--- {log}\n" + "\n".join(lines))
        if tails:
            report.sections.append(("chatterd on hosts", "\n".join(tails)))
    return report
