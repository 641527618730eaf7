"""Hosts made of Linux network namespaces on one bridge: real addresses, real cuts (needs root).

    with host_network(5) as net:                  # h0..h4 at 198.18.0.1..5/24
        proc = net[2].popen(["python3", "-m", "chatterd", ...])
        net[2].cut_off()                          # h2 exchanges nothing with the others
        net[2].heal()
        net[3].set_loss(0.1)                      # 10 % of the UDP datagrams into h3 dropped

The topology: a namespace holding the Linux bridge ``br0`` (a namespace of its own, never the
root one), and one namespace per host with ``lo`` up and a veth pair: ``eth0`` in the host,
its peer (named after the host) enslaved to the bridge. Host ``i`` is ``198.18.0.(i+1)/24``,
in 198.18.0.0/15, the range RFC 2544 sets aside for benchmarks: nothing here sends to any
other address. The bridge has no uplink and the hosts no default route, so nothing can leave
the network, and IPv6 is off in every namespace (no router solicitations, no probes).

Names are ``chatter-hosts-<pid>-<run>-<role>``, unique per process and per network, so parallel
runs cannot collide; addresses can repeat across runs, each run's hosts only see their own
bridge. Whatever happens in the block (an error, Ctrl-C, SIGTERM: taken as Ctrl-C), on the way
out every process started through a host is sent SIGTERM by PID, then SIGKILL after
``grace``; anything still in the namespaces (``ip netns pids``) is SIGKILLed by PID; every
namespace is deleted, and the veth pairs and the bridge with it. A network whose creating
process died without that (SIGKILL) is removed the next time a network is made
(:func:`remove_stale`).

The test process stays in the root namespace, which has no route to the hosts: to talk to a
host, open a socket created inside its namespace (:meth:`Host.socket`;
:mod:`chatterd.testing.nshttp` does so for HTTP). Filtering is iptables in the host's own
namespace, in chains of ours: ``CHATTER-CUT`` (from INPUT and OUTPUT) and ``CHATTER-LOSS``
(from INPUT). chatterd on these hosts: :mod:`chatterd.testing.hostcluster`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

from chatterd.testing.iptables import iptables, iptables_problem, iptables_restore, statistic_drop
from chatterd.testing.netns import (
    NamespaceError,
    add_namespace,
    creator_alive,
    delete_namespace,
    entered,
    ip_check,
    kill_leftovers,
    list_namespaces,
    netns_problem,
    socket_in,
)
from chatterd.testing.processes import check_start

PREFIX = "chatter-hosts-"
SUBNET = "198.18.0"  # host i is SUBNET.(i+1)/24, inside 198.18.0.0/15 (RFC 2544)
PREFIX_LEN = 24
MAX_HOSTS = 250
HOST_IF = "eth0"
BRIDGE_IF = "br0"
CUT_CHAIN = "CHATTER-CUT"
LOSS_CHAIN = "CHATTER-LOSS"
PROG = "chatterd.testing.hosts"
_STALE = re.compile(rf"^{re.escape(PREFIX)}(\d+)-")
_runs = itertools.count()


def host_addr(index: int) -> str:
    """The IPv4 address of host ``index`` (0-based): 198.18.0.1 for h0."""
    if not 0 <= index < MAX_HOSTS:
        raise ValueError(f"host index {index} out of 0..{MAX_HOSTS - 1}")
    return f"{SUBNET}.{index + 1}"


def hosts_problem() -> str | None:
    """Why host networks cannot be made here (not root, no ``ip``, no iptables), or None: a skip reason."""
    why = netns_problem() or iptables_problem()
    if why is None and shutil.which("iptables-restore") is None:
        why = "iptables-restore not found: apt-get install -y iptables"
    return why


def remove_stale() -> list[str]:
    """Best effort: delete the namespaces of this harness (``chatter-hosts-<pid>-...``) whose creating
    process is gone (a run killed before it could clean up; a PID reused since by a younger
    process counts as gone), after killing what is left in them. Namespaces of a live run, this
    one's included, are left alone. Returns those removed."""
    removed = []
    for name in list_namespaces():
        m = _STALE.match(name)
        if m is None or creator_alive(int(m.group(1)), name):
            continue
        kill_leftovers(name, PROG)
        if delete_namespace(name) is None:
            removed.append(name)
    return removed


class Host:
    """One host: a network namespace with ``eth0`` on the bridge at :attr:`addr`."""

    def __init__(self, network: HostNetwork, index: int) -> None:
        self.network = network
        self.index = index
        self.name = f"h{index}"
        self.netns = f"{network.run_id}-{self.name}"
        self.addr = host_addr(index)
        self._cut: set[str] = set()  # addresses this host exchanges nothing with
        self._loss = 0.0

    def __repr__(self) -> str:
        return f"Host({self.name}, {self.addr}, netns={self.netns})"

    @property
    def peers(self) -> list[Host]:
        """The other hosts of the network."""
        return [h for h in self.network.hosts if h is not self]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside this host and wait for it. Raises CalledProcessError if ``check``."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], capture_output=True, text=True, check=check)

    def popen(
        self,
        argv: Sequence[str],
        *,
        output: IO[bytes] | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        what: str | None = None,
        process_group: int | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside this host (``ip netns exec`` execs it: the PID is the command's),
        stdout and stderr to ``output``. The network stops it by PID on the way out if it still
        runs. ``what`` names it for the start guards (chatterd.testing.processes.check_start);
        ``process_group`` is subprocess.Popen's (0: a group of its own, led by it)."""
        check_start(f"{what or Path(argv[0]).name} on {self.name}")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, *argv],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output is not None else None,
            env=env,
            cwd=cwd,
            process_group=process_group,
        )
        self.network.procs.append(proc)
        return proc

    def socket(
        self, family: socket.AddressFamily = socket.AF_INET, kind: socket.SocketKind = socket.SOCK_STREAM
    ) -> socket.socket:
        """A socket that lives in this host's namespace (connect it to this host's addresses)."""
        return socket_in(self.netns, family, kind)

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        """The calling thread inside this host for the block: every socket it makes there (an
        httpx.Client's connections too) lives in the host's namespace. Synchronous code only (a
        thread of its own, e.g. ``trio.to_thread.run_sync``): an ``await`` in the block would run
        other tasks in the wrong namespace."""
        with entered(self.netns):
            yield

    def iptables(self, *args: str, check: bool = True) -> str:
        """``iptables -w 5 ARGS`` inside this host."""
        return iptables(*args, check=check, netns=self.netns)

    def cut_off(self, peers: Iterable[Host] | None = None) -> None:
        """Drop every UDP datagram and TCP segment between this host and ``peers`` (default: every
        other host), both ways, in this host's namespace (INPUT and OUTPUT; a send to a cut peer
        fails with EPERM, as on a host whose firewall cuts it off). Adds to an earlier cut; all
        rules change in one atomic step."""
        self._cut |= {p.addr for p in (self.peers if peers is None else peers) if p is not self}
        self._write_cut()

    def heal(self, peers: Iterable[Host] | None = None) -> None:
        """Undo :meth:`cut_off` for ``peers`` (default: all of it)."""
        self._cut -= {p.addr for p in peers} if peers is not None else self._cut
        self._write_cut()

    @property
    def cut(self) -> frozenset[str]:
        """The addresses this host is cut off from."""
        return frozenset(self._cut)

    def _write_cut(self) -> None:
        rules = [
            f"-A {CUT_CHAIN} {way} {addr}/32 -p {proto} -j DROP"
            for addr in sorted(self._cut)
            for way in ("-s", "-d")
            for proto in ("udp", "tcp")
        ]
        iptables_restore(_table([CUT_CHAIN], rules), self.netns)

    def set_loss(self, p: float) -> None:
        """Drop each UDP datagram coming into this host from the bridge with probability ``p``
        (iptables ``-m statistic``: a lossy link into the host); 0 turns the loss off."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"loss {p} is not a probability")
        rules = [" ".join(["-A", *statistic_drop(LOSS_CHAIN, p, ("-i", HOST_IF))])] if p > 0 else []
        iptables_restore(_table([LOSS_CHAIN], rules), self.netns)
        self._loss = p

    @property
    def loss(self) -> float:
        return self._loss

    def _create(self) -> None:
        """The namespace, its veth pair (peer on the bridge), its address, our iptables chains."""
        bridge = self.network.bridge_ns
        add_namespace(self.netns, ipv6=False)
        self.network.created.append(self.netns)
        ip_check("-n", self.netns, "link", "add", HOST_IF, "type", "veth", "peer", "name", self.name, "netns", bridge)
        ip_check("-n", bridge, "link", "set", self.name, "master", BRIDGE_IF, "up")
        ip_check("-n", self.netns, "addr", "add", f"{self.addr}/{PREFIX_LEN}", "dev", HOST_IF)
        ip_check("-n", self.netns, "link", "set", HOST_IF, "up")
        jumps = [f"-A INPUT -j {CUT_CHAIN}", f"-A OUTPUT -j {CUT_CHAIN}", f"-A INPUT -j {LOSS_CHAIN}"]
        iptables_restore(_table([CUT_CHAIN, LOSS_CHAIN], jumps), self.netns)


def _table(chains: Sequence[str], rules: Sequence[str]) -> str:
    """iptables-restore input for the filter table: ``chains`` declared (emptied), then ``rules``."""
    return "\n".join(["*filter", *(f":{c} - [0:0]" for c in chains), *rules, "COMMIT", ""])


class HostNetwork:
    """The bridge and the hosts of one run; made and removed by :func:`host_network`."""

    def __init__(self, n: int, grace: float = 5.0) -> None:
        if not 1 <= n <= MAX_HOSTS:
            raise ValueError(f"a host network has 1 to {MAX_HOSTS} hosts, not {n}")
        self.run_id = f"{PREFIX}{os.getpid()}-{next(_runs)}"
        self.bridge_ns = f"{self.run_id}-br"
        self.grace = grace
        self.hosts = [Host(self, i) for i in range(n)]
        self.procs: list[subprocess.Popen[bytes]] = []  # every process started in a host, in order
        self.created: list[str] = []  # namespaces made, in order (deleted in reverse)

    def __getitem__(self, index: int) -> Host:
        return self.hosts[index]

    def __len__(self) -> int:
        return len(self.hosts)

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def partition(self, side: Iterable[Host], other: Iterable[Host] | None = None) -> None:
        """Cut ``side`` off from ``other`` (default: every host not in ``side``), both ways."""
        side = list(side)
        rest = [h for h in self.hosts if h not in side] if other is None else list(other)
        for h in side:
            h.cut_off(rest)

    def heal_all(self) -> None:
        """Remove every cut (loss rules stay)."""
        for h in self.hosts:
            if h.cut:
                h.heal()

    def create(self) -> None:
        """Build the topology (see the module's docstring). Raises NamespaceError or IptablesError;
        what was made is still removed by :meth:`close`."""
        remove_stale()
        add_namespace(self.bridge_ns, ipv6=False)
        self.created.append(self.bridge_ns)
        ip_check("-n", self.bridge_ns, "link", "add", BRIDGE_IF, "type", "bridge")
        ip_check("-n", self.bridge_ns, "link", "set", BRIDGE_IF, "up")
        for h in self.hosts:
            h._create()

    def stop_processes(self) -> None:
        """SIGTERM, by PID, every process started in a host that still runs; SIGKILL those left
        after ``grace`` seconds; reap them all."""
        running = [p for p in self.procs if p.poll() is None]
        for p in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for p in running:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
                p.wait()

    def close(self) -> None:
        """Stop every process (:meth:`stop_processes`), SIGKILL anything else in our namespaces,
        delete them (hosts first, the bridge last). Errors are reported on stderr, never raised."""
        self.stop_processes()
        for name in reversed(self.created):
            kill_leftovers(name, PROG)
            err = delete_namespace(name)
            if err:
                print(f"{PROG}: could not delete {name}: {err}", file=sys.stderr)
        self.created.clear()


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """SIGINT and SIGTERM ignored for the block, so that a second Ctrl-C cannot cut the clean-up
    short; the previous handlers come back after it (main thread only: elsewhere, nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = [(sig, signal.signal(sig, signal.SIG_IGN)) for sig in (signal.SIGINT, signal.SIGTERM)]
    try:
        yield
    finally:
        for sig, handler in saved:
            if handler is not None:  # None: set from C, cannot be put back
                signal.signal(sig, handler)


def _on_term(signum: int, frame: FrameType | None) -> None:
    """SIGTERM taken as Ctrl-C: SIGINT raised in its place, so the SIGINT handler in force acts on
    it (trio's, inside ``trio.run``, raises KeyboardInterrupt only where that is safe; Python's
    default raises it at once) and the block cleans up as it would on Ctrl-C."""
    signal.raise_signal(signal.SIGINT)


def _term_as_interrupt() -> Callable[[], None]:
    """Install :func:`_on_term` while SIGTERM has its default action and SIGINT a handler of
    Python code (a runner in the background, with SIGINT ignored, keeps the default: a network
    it leaves behind is removed by the next run, see :func:`remove_stale`). Returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL or not callable(signal.getsignal(signal.SIGINT)):
        return lambda: None
    signal.signal(signal.SIGTERM, _on_term)

    def undo() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return undo


@contextlib.contextmanager
def host_network(n: int, grace: float = 5.0) -> Iterator[HostNetwork]:
    """A network of ``n`` hosts ``h0``... for the block; everything removed on the way out (see the
    module's docstring). Raises NamespaceError (or IptablesError) if it cannot be made."""
    net = HostNetwork(n, grace)
    undo = _term_as_interrupt()
    try:
        net.create()
        yield net
    finally:
        with _no_interrupts():
            net.close()
        undo()


__all__ = [
    "MAX_HOSTS",
    "PREFIX",
    "Host",
    "HostNetwork",
    "NamespaceError",
    "host_addr",
    "host_network",
    "hosts_problem",
    "remove_stale",
]
