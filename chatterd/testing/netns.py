"""Linux network namespaces for tests and benchmarks: create, enter for one socket, empty, delete.

The primitives under :mod:`chatterd.testing.hosts` (hosts made of namespaces on a bridge) and
``benchmarks/_lib/netns.py`` (the soak's namespace). They need root and iproute2's ``ip``;
:func:`netns_problem` says why they cannot be used here, in one line, for a skip reason.

Nothing here changes the namespace this process runs in for longer than one ``socket()`` call
(:func:`socket_in`): the socket belongs to the namespace it was created in for its whole life,
so the caller (a test in the root namespace) can then connect it to an address that only
exists in that namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

NETNS_DIR = Path("/run/netns")  # where `ip netns add` keeps a handle on each named namespace
CLONE_NEWNET = 0x40000000


class NamespaceError(RuntimeError):
    """A namespace that could not be created or used: one line saying why."""


def ip(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGV`` and wait; never raises for a non-zero status (look at ``returncode``)."""
    return subprocess.run(["ip", *argv], capture_output=True, text=True, input=stdin)


def ip_check(*argv: str, stdin: str | None = None) -> str:
    """Run ``ip ARGV``; its output. Raises NamespaceError with ip's own message on failure."""
    p = ip(*argv, stdin=stdin)
    if p.returncode != 0:
        raise NamespaceError(f"ip {' '.join(argv)}: {p.stderr.strip() or p.returncode}")
    return p.stdout


def current_netns() -> str:
    """The name of the network namespace this process is in ("" for the initial one)."""
    return ip("netns", "identify", str(os.getpid())).stdout.strip()


def netns_problem() -> str | None:
    """Why named network namespaces cannot be made here (not Linux, not root, no ``ip``), or None."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "ip not found: apt-get install -y iproute2"
    probe = f"chatter-probe-{os.getpid()}"
    p = ip("netns", "add", probe)
    if p.returncode != 0:
        return f"ip netns add refused: {p.stderr.strip()}"
    ip("netns", "del", probe)
    return None


def list_namespaces() -> list[str]:
    """The named network namespaces (``ip netns list`` prints ``NAME (id: N)`` or ``NAME``)."""
    return [line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()]


def add_namespace(name: str, ipv6: bool = True) -> None:
    """Create namespace ``name`` with ``lo`` up. Without ``ipv6`` IPv6 is turned off in it before
    any interface is added, so nothing but what a test sends leaves them (no router
    solicitations, no duplicate-address probes). Raises NamespaceError."""
    ip_check("netns", "add", name)
    try:
        if not ipv6:
            _disable_ipv6(name)
        ip_check("-n", name, "link", "set", "lo", "up")
    except BaseException:
        ip("netns", "del", name)
        raise


def _disable_ipv6(name: str) -> None:
    """IPv6 off in namespace ``name``, for its interfaces now and to come. /proc/sys/net is the
    namespace of the thread that opens it: written from inside, no ``sysctl`` binary needed.
    A kernel without IPv6 has nothing to turn off."""
    with entered(name):
        for conf in ("all", "default"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6").write_text("1\n")


def namespace_pids(name: str) -> list[int]:
    """The processes in namespace ``name`` (``ip netns pids``)."""
    return [int(x) for x in ip("netns", "pids", name).stdout.split()]


def kill_leftovers(name: str, prog: str, wait: float = 10.0) -> list[int]:
    """SIGKILL, by PID, every process still in namespace ``name``; wait up to ``wait`` seconds for
    them to be gone. Returns the PIDs killed (each one is also reported on stderr)."""
    left = namespace_pids(name)
    for pid in left:
        print(f"{prog}: process {pid} still in {name}; SIGKILL", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait
    while left and time.monotonic() < deadline and namespace_pids(name):
        time.sleep(0.05)
    return left


def delete_namespace(name: str) -> str | None:
    """``ip netns del NAME`` (its interfaces go with it); ip's error, or None once deleted."""
    p = ip("netns", "del", name)
    return None if p.returncode == 0 else (p.stderr.strip() or f"status {p.returncode}")


def creator_alive(pid: int, name: str) -> bool:
    """Whether process ``pid``, alive, can have made namespace ``name``: it started before the
    namespace did (its handle's mtime), so a PID reused since by another process does not count."""
    try:
        started = psutil.Process(pid).create_time()
        made = (NETNS_DIR / name).stat().st_mtime
    except psutil.NoSuchProcess:
        return False
    except (OSError, psutil.Error):
        return pid_alive(pid)  # cannot tell: keep it
    return started <= made + 1.0  # create_time counts in clock ticks: a little slack


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (of any user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _setns(fd: int) -> None:
    """Move the calling thread into the network namespace behind ``fd``."""
    setns = getattr(os, "setns", None)  # Python 3.12+
    if setns is not None:
        setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """This thread inside namespace ``name`` for the block, then back where it was. Synchronous
    use only: an ``await`` in the block would let other tasks run in the wrong namespace."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NamespaceError(f"no network namespace {name}") from None
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def socket_in(
    name: str, family: socket.AddressFamily = socket.AF_INET, kind: socket.SocketKind = socket.SOCK_STREAM
) -> socket.socket:
    """A new socket that lives in namespace ``name``: its connections and datagrams are routed by
    that namespace's interfaces and filtered by its iptables, from whichever thread uses it."""
    with entered(name):
        return socket.socket(family, kind)
