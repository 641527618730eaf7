"""Test your application against chatter: simulated clusters in virtual time, real ones on loopback.

The pytest plugin (:mod:`chatterd.testing.plugin`, loaded automatically once chatter is
installed: it is registered under the ``pytest11`` entry point) provides the fixtures

- ``chatter_sim``: a :class:`SimFactory`, seeded simulations of many nodes in one process, in
  virtual time, over a lossy network;
- ``chatter_cluster_factory``: a :class:`ClusterFactory` (async, trio), clusters of real
  ``chatterd`` processes on 127.0.0.1, stopped by PID at teardown whatever happens;
- ``chatter_cluster``: one converged :class:`LocalCluster` (3 nodes unless the test says
  ``@pytest.mark.chatter_cluster(n=..., args=[...])``);
- ``chatter_log_dir``: where those processes write their logs.

Tests that start processes are marked ``@pytest.mark.e2e``; the real-process fixtures and
the harness refuse to run in a test that is not. This package itself imports no pytest: the
harness (:func:`local_cluster`, :class:`LocalCluster`, ...) and the factories work from plain
trio code too (the demo and the benchmarks use them).

Hosts made of Linux network namespaces (root only, imported on their own):
:mod:`chatterd.testing.hosts` (the bridge, the hosts, cuts and loss by iptables) and
:mod:`chatterd.testing.hostcluster` (chatterd on every host with one command).
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chatterd.testing.factories import DEFAULT_SEED, ClusterFactory, SimFactory
    from chatterd.testing.processes import (
        HOST,
        LocalCluster,
        LocalNode,
        ManagedProcess,
        add_start_guard,
        check_start,
        free_port,
        local_cluster,
        stop_processes,
    )

# Imported on first use (PEP 562): a process that only needs HOST or free_port (the examples'
# apps) does not pay for the simulator's import, about 0.5 s of a start on a busy machine.
_WHERE = {
    "DEFAULT_SEED": "factories",
    "ClusterFactory": "factories",
    "SimFactory": "factories",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"chatterd.testing.{_WHERE.get(name, 'processes')}")
    value = getattr(module, name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_SEED",
    "HOST",
    "ClusterFactory",
    "LocalCluster",
    "LocalNode",
    "ManagedProcess",
    "SimFactory",
    "add_start_guard",
    "check_start",
    "free_port",
    "local_cluster",
    "stop_processes",
]
