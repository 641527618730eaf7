"""The chatter pytest plugin: test your failover code against a chatter cluster.

Loaded automatically once chatter is installed (entry point ``pytest11``, named after this
module, so ``-p chatterd.testing.plugin`` or ``pytest_plugins = ["chatterd.testing.plugin"]``
on top of it is harmless, and ``-p no:chatterd.testing.plugin`` turns it off).

Fixtures (see their docstrings, or ``pytest --fixtures``):

- ``chatter_sim`` -> :class:`~chatterd.testing.SimFactory`: simulations in virtual time;
- ``chatter_cluster_factory`` -> :class:`~chatterd.testing.ClusterFactory`: real processes
  (async: needs pytest-trio; the test must be marked ``e2e``);
- ``chatter_cluster`` -> :class:`~chatterd.testing.LocalCluster`: one converged cluster, sized
  by ``@pytest.mark.chatter_cluster(n, args=..., env=...)``;
- ``chatter_log_dir`` -> :class:`~pathlib.Path`: where the processes' logs go.

Options: ``--chatter-seed N`` (default seed of ``chatter_sim``), ``--chatter-keep-logs DIR``
(copy every real-process test's node logs to ``DIR/<test>/``) and the ini setting
``chatter_e2e_enforce``:

- ``harness`` (the default): a test not marked ``e2e`` fails if it asks for a real-process
  fixture or starts a node through the harness (:mod:`chatterd.testing.processes`);
- ``all``: in addition, a test not marked ``e2e`` fails if it starts any process at all
  (``subprocess``, ``trio.run_process``, ``os.fork``, ``os.system``..., seen by an audit
  hook), so ``pytest -m "not e2e"`` provably starts none; chatter's own suite runs so;
- ``off``: no checks.

A failed test's report gets a "chatter" section: each simulation's seed and virtual time,
and the tail of each chatterd log.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from chatterd.testing.factories import DEFAULT_SEED, ClusterFactory, SimFactory
from chatterd.testing.processes import LocalCluster, add_start_guard

E2E = "e2e"
ENFORCE_MODES = ("harness", "all", "off")
# Audit events (https://docs.python.org/3/library/audit_events.html) that start a process.
PROCESS_EVENTS = frozenset(
    {"subprocess.Popen", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.system", "os.exec", "pty.spawn"}
)
LOG_TAIL_LINES = 10
REAL_PROCESS_FIXTURES = ("chatter_cluster", "chatter_cluster_factory")  # the test must be e2e to use them


class NotMarkedE2E(RuntimeError):
    """Raised where a test not marked ``e2e`` starts a process; the test then fails."""


@dataclass
class _Session:
    """One pytest run's state. pytester can nest runs in one process: a process is asked of the
    innermost run's test first, then of the tests around it (each must be e2e to allow it)."""

    mode: str
    item: pytest.Item | None = None  # the test being run (setup, call, teardown)
    refused: list[str] = field(default_factory=list)  # processes refused in the current phase

    def refuse(self, what: str) -> None:
        item = self.item
        if item is None or self.mode == "off" or _is_e2e(item):
            return
        self.refused.append(what)
        raise NotMarkedE2E(_not_e2e_message(item, what, self.mode))


_SESSION = pytest.StashKey[_Session]()
_REPORTERS = pytest.StashKey[list[Callable[[], str]]]()
_sessions: list[_Session] = []
_remove_guard: Callable[[], None] | None = None
_audit_installed = False


def _is_e2e(item: pytest.Item) -> bool:
    return item.get_closest_marker(E2E) is not None


def _not_e2e_message(item: pytest.Item, what: str, mode: str) -> str:
    return (
        f"{item.nodeid} starts a process ({what}) but is not marked e2e.\n"
        f"Mark it @pytest.mark.e2e (or put pytestmark = pytest.mark.e2e in its module): tests that start "
        f'processes are e2e, so that pytest -m "not e2e" starts none. (chatter_e2e_enforce = {mode})'
    )


def _harness_guard(what: str) -> None:
    for session in reversed(_sessions):
        session.refuse(what)


def _text(x: object) -> str:
    return os.fsdecode(x) if isinstance(x, bytes) else str(x)


def _describe(event: str, args: tuple[object, ...]) -> str:
    """``event: command line`` from the audit event's arguments, as far as they tell."""
    at = {"subprocess.Popen": 1, "os.posix_spawn": 1, "os.exec": 1, "os.spawn": 2}.get(event, len(args))
    if at < len(args):  # where the argument vector is
        argv = args[at]
        text = " ".join(map(_text, argv)) if isinstance(argv, list | tuple) else _text(argv)
    elif event == "os.system" and args:
        text = _text(args[0])
    else:
        text = ""
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{event}: {text}" if text else event


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event in PROCESS_EVENTS:
        for session in reversed(_sessions):
            if session.mode == "all":
                session.refuse(_describe(event, args))


# --------------------------------------------------------------------------- configuration


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chatter", "chatter clusters (chatterd.testing)")
    group.addoption(
        "--chatter-seed",
        type=int,
        metavar="N",
        default=None,
        help=f"default seed of the chatter_sim simulations (default {DEFAULT_SEED}); a test's own seed= wins",
    )
    group.addoption(
        "--chatter-keep-logs",
        metavar="DIR",
        default=None,
        help="copy the chatterd logs of every test that starts chatterd processes to DIR/<test>/",
    )
    parser.addini(
        "chatter_e2e_enforce",
        "tests not marked e2e that start processes fail: 'harness' (chatter's fixtures and harness; "
        "the default), 'all' (any process, seen by an audit hook) or 'off'",
        default="harness",
    )


def pytest_configure(config: pytest.Config) -> None:
    global _remove_guard, _audit_installed
    config.addinivalue_line("markers", f"{E2E}: starts real processes (chatterd, handler scripts, etcd, a browser...)")
    config.addinivalue_line(
        "markers",
        "chatter_cluster(n=3, *, args=(), env=None, converge=True): the cluster the chatter_cluster fixture starts",
    )
    mode = str(config.getini("chatter_e2e_enforce")).strip() or "harness"
    if mode not in ENFORCE_MODES:
        raise pytest.UsageError(f"chatter_e2e_enforce must be one of {', '.join(ENFORCE_MODES)}, not {mode!r}")
    session = _Session(mode)
    config.stash[_SESSION] = session
    _sessions.append(session)
    if _remove_guard is None:
        _remove_guard = add_start_guard(_harness_guard)
    if mode == "all" and not _audit_installed:
        sys.addaudithook(_audit)  # for the life of the process; it does nothing outside a session in "all"
        _audit_installed = True


def pytest_unconfigure(config: pytest.Config) -> None:
    global _remove_guard
    session = config.stash.get(_SESSION, None)
    if session is not None and session in _sessions:
        _sessions.remove(session)
    if not _sessions and _remove_guard is not None:
        _remove_guard()
        _remove_guard = None


def pytest_report_header(config: pytest.Config) -> str:
    seed = config.getoption("chatter_seed")
    return (
        f"chatter: chatter_sim seed {DEFAULT_SEED if seed is None else seed}, "
        f"e2e enforcement {config.stash[_SESSION].mode}"
    )


# --------------------------------------------------------------------------- enforcement


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    session = item.config.stash[_SESSION]
    session.item = item
    try:
        return (yield)
    finally:
        session.item = None


def _fail_if_refused(item: pytest.Item) -> Generator[None, object, object]:
    session = item.config.stash[_SESSION]
    session.refused.clear()
    try:
        return (yield)
    finally:
        if session.refused:
            what = "; ".join(dict.fromkeys(session.refused))
            session.refused.clear()
            # from None: the refusal's own traceback (raised from deep in subprocess) says nothing more
            raise pytest.fail.Exception(_not_e2e_message(item, what, session.mode), pytrace=False) from None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _fail_if_refused(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _fail_if_refused(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    return (yield from _fail_if_refused(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    report = yield
    if isinstance(report, pytest.TestReport) and report.failed:
        reporters = item.stash.get(_REPORTERS, [])
        texts = [t for t in (r() for r in reporters) if t]
        item.stash[_REPORTERS] = []  # once per test, at its first failure
        if texts:
            report.sections.append(("chatter", "\n".join(texts)))
    return report


def _report_on_failure(request: pytest.FixtureRequest, reporter: Callable[[], str]) -> None:
    request.node.stash.setdefault(_REPORTERS, []).append(reporter)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def chatter_sim(request: pytest.FixtureRequest) -> SimFactory:
    """Simulated chatter clusters: many nodes in this process, in virtual time, over a lossy network.

    ``sim = chatter_sim(n=0, *, seed=None, loss=0.0, latency=None, config=None, settle=5.0)``
    returns a :class:`chatterd.sim.Simulation` whose ``n`` nodes ``n0``... joined through ``n0``
    and ran ``settle`` virtual seconds. The seed defaults to ``--chatter-seed`` (1), so a
    failure replays exactly. Drive it with ``run_for``, ``kill``, ``restart``, ``leave``,
    ``partition``/``heal``, ``inject``, ``set_tags``; observe it with ``live_names``,
    ``state_of``, ``holders``, ``member_events``, ``deliveries``. Nothing starts a process:
    no ``e2e`` marker needed. A failed test reports each simulation's seed.
    """
    seed = request.config.getoption("chatter_seed")
    factory = SimFactory(DEFAULT_SEED if seed is None else seed)
    _report_on_failure(request, factory.describe)
    return factory


@pytest.fixture
def chatter_log_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """The directory the real-process fixtures' chatterd nodes log to (``tmp_path/chatter-logs``,
    one subdirectory per cluster, one JSON log file per node). With ``--chatter-keep-logs DIR``
    it is copied to ``DIR/<test id>/`` at teardown."""
    log_dir = tmp_path / "chatter-logs"
    log_dir.mkdir()
    yield log_dir
    keep = request.config.getoption("chatter_keep_logs")
    if keep and any(log_dir.iterdir()):
        name = re.sub(r"[^\w.-]+", "_", request.node.nodeid).strip("_")
        shutil.copytree(log_dir, Path(request.config.invocation_params.dir, keep, name), dirs_exist_ok=True)


@pytest.fixture
def _chatter_require_e2e(request: pytest.FixtureRequest) -> None:
    session = request.config.stash[_SESSION]
    item = request.node
    if session.mode != "off" and isinstance(item, pytest.Item) and not _is_e2e(item):
        asked = next((f for f in REAL_PROCESS_FIXTURES if f in request.fixturenames), "chatter_cluster_factory")
        pytest.fail(_not_e2e_message(item, f"fixture {asked}", session.mode), pytrace=False)


@pytest.fixture
async def chatter_cluster_factory(
    request: pytest.FixtureRequest, chatter_log_dir: Path, _chatter_require_e2e: None
) -> AsyncIterator[ClusterFactory]:
    """Clusters of real chatterd processes on 127.0.0.1 (async, trio: needs pytest-trio).

    ``cluster = await chatter_cluster_factory(n=3, *, args=(), env=None, converge=True,
    timeout=None)`` starts ``n`` nodes (``n0``...) with free ports, joined through ``n0``, and
    with ``converge`` waits until all see each other alive. ``args`` go on each node's command
    line (``["--role", "primary:1"]``), ``env`` into its environment. The result is a
    :class:`chatterd.testing.LocalCluster`: ``cluster.nodes[i]`` (``.url``, ``.addr``,
    ``.kill(sig)``, ``.start()``, ``await .get(path)``), ``cluster.add(name, args=...)``,
    ``await cluster.wait_converged()``, ``await cluster.wait_state(name, "dead")``.

    Every process is stopped by PID at teardown, whatever the test did (and SIGKILLed by a
    last-resort finalizer if that teardown never ran). The test must be marked ``e2e``.
    """
    factory = ClusterFactory(chatter_log_dir)
    request.addfinalizer(factory.kill_all)
    _report_on_failure(request, lambda: factory.log_tails(LOG_TAIL_LINES))
    try:
        yield factory
    finally:
        await factory.aclose()


@pytest.fixture
async def chatter_cluster(request: pytest.FixtureRequest, chatter_cluster_factory: ClusterFactory) -> LocalCluster:
    """One converged cluster of real chatterd processes (3 nodes), from ``chatter_cluster_factory``.

    Size and options come from the test's marker, which takes the factory's arguments:
    ``@pytest.mark.chatter_cluster(5, args=["--role", "primary:1"])``. The test must be
    marked ``e2e``.
    """
    marker = request.node.get_closest_marker("chatter_cluster")
    args, kwargs = (marker.args, marker.kwargs) if marker is not None else ((), {})
    return await chatter_cluster_factory(*args, **kwargs)
