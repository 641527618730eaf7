"""The process harness moved to :mod:`chatterd.testing` (see chatterd/testing/processes.py).

These names stay importable from here for benchmarks/ and older scripts; new code imports
them from ``chatterd.testing``.
"""

from chatterd.testing.processes import (
    HOST,
    LocalCluster,
    LocalNode,
    ManagedProcess,
    free_port,
    local_cluster,
    stop_processes,
)

__all__ = ["HOST", "LocalCluster", "LocalNode", "ManagedProcess", "free_port", "local_cluster", "stop_processes"]
