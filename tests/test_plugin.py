"""The pytest plugin (chatterd.testing.plugin) as chatter's users see it: small test files of
theirs, run by pytester with ``-p chatterd.testing.plugin`` (in this process, or as a pytest
process of their own where they start chatterd)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

import chatterd.testing.plugin

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "chatterd.testing.plugin"
TRIO_INI = "[pytest]\ntrio_mode = true\n"


@pytest.fixture(autouse=True)
def only_our_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The inner runs load only the plugins they name: an installed plugin may start processes
    as it loads (pytest-benchmark runs git), which would make these tests e2e."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """The inner run, in this process."""
    # -W: pytest-trio is imported already (by this run), so pytest cannot rewrite its asserts; no matter
    argv = ["-p", PLUGIN, "-p", "trio", "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    return pytester.runpytest_inprocess(*argv, *args)


def run_in_a_process(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str) -> pytest.RunResult:
    """The inner run as a pytest process of its own, importing this checkout's chatterd. For
    inner tests that talk HTTP: in this process, the modules httpx imports on first use would
    be imported by the inner run, then dropped by pytester, leaving httpx with stale classes."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return pytester.runpytest_subprocess("-p", PLUGIN, "-p", "trio", "-p", "no:cacheprovider", *args)


def test_simulator_fixture_seeded_and_reported(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_failover="""
        def test_a_killed_primary_is_seen_dead(chatter_sim):
            sim = chatter_sim(6, loss=0.05)
            names = sim.live_names()
            assert names == ["n0", "n1", "n2", "n3", "n4", "n5"]
            sim.kill("n2")
            sim.run_for(8)
            assert all(sim.state_of("n2", seen_by=n) == "dead" for n in sim.live_names())

        def test_seed_comes_from_the_option_unless_given(chatter_sim):
            assert chatter_sim.seed == 7
            chatter_sim(seed=3)
            chatter_sim()
            assert [seed for seed, _ in chatter_sim.simulations] == [3, 7]

        def test_fails_and_reports_its_seed(chatter_sim):
            sim = chatter_sim(3)
            sim.run_for(1)
            assert False, "on purpose"
        """
    )
    result = run(pytester, "--chatter-seed", "7")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "chatter: chatter_sim seed 7, e2e enforcement harness",
            "*- chatter -*",
            "simulation 0: seed=7 loss=0.0 virtual time=6.000 s live=3",
        ]
    )


def test_same_seed_same_history_through_the_fixture(chatter_sim: chatterd.testing.SimFactory) -> None:
    def history(seed: int) -> list[tuple[float, str, str]]:
        sim = chatter_sim(8, seed=seed, loss=0.1)
        sim.kill("n5")
        sim.run_for(5)
        return [(r.time, r.observer, type(r.event).__name__) for r in sim.records]

    assert history(11) == history(11)
    assert history(11) != history(12)
    assert [seed for seed, _ in chatter_sim.simulations] == [11, 11, 11, 12]


def test_real_process_fixtures_refuse_a_test_not_marked_e2e(pytester: pytest.Pytester) -> None:
    """Refused at setup, before any process starts: this test needs no e2e marker itself."""
    pytester.makeini(TRIO_INI)
    pytester.makepyfile(
        test_unmarked="""
        async def test_cluster(chatter_cluster):
            pass

        async def test_factory(chatter_cluster_factory):
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "*test_unmarked.py::test_cluster starts a process (fixture chatter_cluster) but is not marked e2e.",
            "Mark it @pytest.mark.e2e*",
            "*test_unmarked.py::test_factory starts a process (fixture chatter_cluster_factory) but is not marked e2e.",
            "Mark it @pytest.mark.e2e*",
        ]
    )


def test_enforcement_off(pytester: pytest.Pytester) -> None:
    pytester.makeini(TRIO_INI + "chatter_e2e_enforce = off\n")
    pytester.makepyfile(
        test_off="""
        async def test_the_fixture_is_not_refused(chatter_cluster_factory):
            assert chatter_cluster_factory.clusters == []
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_a_bad_enforcement_mode_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nchatter_e2e_enforce = sometimes\n")
    pytester.makepyfile("def test_x(): pass")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*chatter_e2e_enforce must be one of harness, all, off, not 'sometimes'"])


@pytest.mark.e2e  # an inner pytest process
def test_the_harness_refuses_a_test_not_marked_e2e(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini(TRIO_INI)
    pytester.makepyfile(
        test_direct="""
        import subprocess
        from chatterd.testing import local_cluster

        async def test_local_cluster():
            async with local_cluster(1):
                pass

        def test_other_processes_are_fine_in_harness_mode():
            subprocess.run(["true"], check=True)
        """
    )
    result = run_in_a_process(pytester, monkeypatch)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*::test_local_cluster starts a process (chatterd n0) but is not marked e2e.*"])


@pytest.mark.e2e  # the inner e2e test starts a process
def test_all_mode_refuses_any_process_outside_e2e(pytester: pytest.Pytester) -> None:
    pytester.makeini(TRIO_INI + "chatter_e2e_enforce = all\n")
    pytester.makepyfile(
        test_all="""
        import os
        import subprocess
        import pytest
        import trio

        def test_subprocess():
            subprocess.run(["true"])

        async def test_trio_run_process():
            await trio.run_process(["true"])

        def test_os_system():
            os.system("true")

        def test_caught_is_still_a_failure():
            try:
                subprocess.run(["true"])
            except Exception:
                pass

        @pytest.fixture
        def starts_in_setup():
            subprocess.run(["true"])

        def test_fixture(starts_in_setup):
            pass

        @pytest.mark.e2e
        def test_marked():
            subprocess.run(["true"], check=True)
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=4, errors=1)
    result.stdout.fnmatch_lines_random(
        [
            "*::test_subprocess starts a process (subprocess.Popen: true) but is not marked e2e.",
            "*::test_trio_run_process starts a process (subprocess.Popen: true) but is not marked e2e.",
            "*::test_os_system starts a process (os.system: true) but is not marked e2e.",
            "*::test_caught_is_still_a_failure starts a process (subprocess.Popen: true) but is not marked e2e.",
            "*::test_fixture starts a process (subprocess.Popen: true) but is not marked e2e.",
        ]
    )


@pytest.mark.e2e
def test_cluster_fixtures_start_report_and_stop_real_processes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytester.makeini(TRIO_INI)
    pids = tmp_path / "pids"
    pytester.makepyfile(
        test_cluster=f"""
        import pytest

        pytestmark = pytest.mark.e2e
        PIDS = {str(pids)!r}

        def remember(cluster):
            with open(PIDS, "a") as f:
                f.writelines(f"{{n.pid}}\\n" for n in cluster.nodes)

        @pytest.mark.chatter_cluster(2, args=["--role", "primary:1"])
        async def test_marker_sized_cluster(chatter_cluster):
            remember(chatter_cluster)
            assert [n.name for n in chatter_cluster.nodes] == ["n0", "n1"]
            assert set(await chatter_cluster.nodes[0].members()) == {{"n0", "n1"}}
            chatter_cluster.nodes[1].kill()
            await chatter_cluster.wait_state("n1", "dead", timeout=20)

        async def test_factory_and_a_failure_report(chatter_cluster_factory, chatter_log_dir):
            one = await chatter_cluster_factory(1)
            two = await chatter_cluster_factory(0)
            two.add("solo")
            remember(one)
            remember(two)
            assert (chatter_log_dir / "cluster-1" / "solo.log").exists()
            assert False, "on purpose: the report shows the nodes' logs"
        """
    )
    keep = tmp_path / "kept"
    result = run_in_a_process(pytester, monkeypatch, "--chatter-keep-logs", str(keep))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*- chatter -*", "--- n0 (127.0.0.1:*) *cluster-0*n0.log", "*--- solo *"])
    started = [int(line) for line in pids.read_text().split()]
    assert len(started) == 4
    for pid in started:  # stopped by PID at teardown, and reaped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    kept = sorted(p.relative_to(keep).as_posix() for p in keep.rglob("*.log"))
    assert kept == [
        "test_cluster.py_test_factory_and_a_failure_report/cluster-0/n0.log",
        "test_cluster.py_test_factory_and_a_failure_report/cluster-1/solo.log",
        "test_cluster.py_test_marker_sized_cluster/cluster-0/n0.log",
        "test_cluster.py_test_marker_sized_cluster/cluster-0/n1.log",
    ]


def test_entry_point_is_named_after_the_module() -> None:
    """So that -p chatterd.testing.plugin (or pytest_plugins) on top of the entry point is one
    plugin, not "Plugin already registered under a different name"."""
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["pytest11"] == {PLUGIN: PLUGIN}


@pytest.mark.e2e  # every installed plugin loads, and one may start a process (pytest-benchmark runs git)
@pytest.mark.parametrize("entry_point", [PLUGIN, "chatter"])
def test_entry_point_and_p_option_load_the_plugin_once(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry_point: str
) -> None:
    """An installed entry point (a distribution made up here, on sys.path) plus -p plus
    pytest_plugins: one plugin if the entry point has the module's name; under another name
    (\"chatter\") pytest refuses to register the module twice."""
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    site = tmp_path / "site"
    dist = site / "chatter_plugin_check-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: chatter-plugin-check\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(f"[pytest11]\n{entry_point} = {PLUGIN}\n")
    pytester.syspathinsert(site)
    pytester.makeconftest(f"pytest_plugins = [{PLUGIN!r}]")
    pytester.makepyfile("def test_x(chatter_sim): assert chatter_sim(2).live_names() == ['n0', 'n1']")
    result = run(pytester)
    if entry_point == PLUGIN:
        result.assert_outcomes(passed=1)
    else:
        assert result.ret != 0
        assert "already registered under a different name" in str(result.stderr) + str(result.stdout)
