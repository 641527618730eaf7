"""Test your application against chatter: clusters of real ``chatterd`` processes on loopback.

The harness (:func:`local_cluster`, :class:`LocalCluster`, ...) starts the processes and
stops them by PID; it needs no pytest and works from plain trio code too (the demo and the
benchmarks use it).
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

__all__ = [
    "HOST",
    "LocalCluster",
    "LocalNode",
    "ManagedProcess",
    "free_port",
    "local_cluster",
    "stop_processes",
]
