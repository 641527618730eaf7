"""A network namespace of our own, and a child process run inside it (needs root and ``ip``).

    with network_namespace(f"chatter-soak-{os.getpid()}", prog="soak") as ns:
        child = ns.start([sys.executable, "-m", "benchmarks.soak", "--inner", ...], cwd=REPO)
        return child.wait()

On the way out, whatever happened (Ctrl-C, SIGTERM made KeyboardInterrupt, an error): further
SIGINT and SIGTERM are ignored so the clean-up runs to its end; each child gets SIGINT (its
launchers stop their nodes by PID) and SIGKILL if still there after ``grace`` seconds; any
process left in the namespace (``ip netns pids``) gets SIGKILL by PID; the namespace is deleted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from chatterd.testing.netns import NamespaceError, add_namespace, current_netns, delete_namespace, ip, kill_leftovers

__all__ = ["Namespace", "NamespaceError", "current_netns", "network_namespace"]


class Namespace:
    def __init__(self, name: str, prog: str, grace: float) -> None:
        self.name = name
        self.prog = prog
        self.grace = grace
        self.children: list[subprocess.Popen[bytes]] = []

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace and wait for it."""
        return ip("netns", "exec", self.name, *argv)

    def start(self, argv: Sequence[str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start a child process inside the namespace; stopped on the way out if still running."""
        child = subprocess.Popen(["ip", "netns", "exec", self.name, *argv], cwd=cwd)
        self.children.append(child)
        return child

    def stop_children(self) -> None:
        for child in self.children:
            if child.poll() is not None:
                continue
            os.kill(child.pid, signal.SIGINT)
            try:
                child.wait(self.grace)
            except subprocess.TimeoutExpired:
                os.kill(child.pid, signal.SIGKILL)
                child.wait()

    def kill_leftovers(self) -> None:
        kill_leftovers(self.name, self.prog)


@contextlib.contextmanager
def network_namespace(name: str, prog: str, grace: float = 60.0) -> Iterator[Namespace]:
    """Create namespace ``name`` with lo up; clean everything up on the way out (see above).
    Raises NamespaceError if it cannot be created."""
    try:
        add_namespace(name)
    except NamespaceError as e:
        raise NamespaceError(f"cannot create network namespace {name}: {e}") from None
    ns = Namespace(name, prog, grace)
    try:
        yield ns
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; cleaning up", file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        ns.stop_children()
        ns.kill_leftovers()
        err = delete_namespace(name)
        if err:
            print(f"{prog}: could not delete {name}: {err}", file=sys.stderr)
