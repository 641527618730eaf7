"""Run a cluster of real ``chatterd`` processes on loopback (tests, benchmarks, the demo).

    async with local_cluster(5) as cluster:
        await cluster.wait_converged()
        cluster.nodes[2].kill()                      # SIGKILL, by PID
        await cluster.wait_for(lambda: ..., timeout=10)

Every process is started by this module and stopped by it, by PID, when the block exits,
whatever happened inside. Each node gets a free UDP port (and the same TCP port for its
HTTP API) on 127.0.0.1 and writes JSON logs to a file in ``log_dir``.

This module needs no pytest. Under pytest, the chatter plugin (chatterd.testing.plugin) adds a
start guard (:func:`add_start_guard`) that refuses to start a node in a test not marked ``e2e``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import trio

HOST = "127.0.0.1"

StartGuard = Callable[[str], None]
_start_guards: list[StartGuard] = []


def add_start_guard(guard: StartGuard) -> Callable[[], None]:
    """Have ``guard(what)`` called before the harness starts a process (``what`` names it, e.g.
    ``"chatterd n0"``); the guard refuses by raising. Returns the function that removes it."""
    _start_guards.append(guard)
    return lambda: _start_guards.remove(guard)


def check_start(what: str) -> None:
    """Run the start guards: call this before starting a process (LocalNode.start does)."""
    for guard in list(_start_guards):
        guard(what)


# Ports for test processes come from below the kernel's ephemeral range. A port inside it can
# be taken by a client's own connect(): a process polling a local port nothing listens on yet
# (waiting for a node's API) may be given that very port as its source and connect to itself
# (TCP simultaneous open). It then reads its own request back, and the port is taken when the
# node binds it: seen in CI as "BadStatusLine: GET /v1/health HTTP/1.1" and a node that never
# answered. Each process walks the range from an offset of its own pid, so parallel processes
# rarely try the same ports.
PORT_BASE = 10000
_EPHEMERAL_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_picks = itertools.count()


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default, and a safe bound where the file is missing


def _bindable(family: socket.AddressFamily, host: str, port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(family, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host: str = HOST, family: socket.AddressFamily = socket.AF_INET) -> int:
    """A port free for both UDP and TCP on ``host``, outside the ephemeral range."""
    span = _ephemeral_low() - PORT_BASE
    if span >= 1000:
        for _ in range(500):
            port = PORT_BASE + (os.getpid() * 7919 + 13 * next(_picks)) % span
            if _bindable(family, host, port):
                return port
    for _ in range(100):  # an odd port range: what the kernel gives
        with socket.socket(family, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = int(u.getsockname()[1])
        if _bindable(family, host, port):
            return port
    raise RuntimeError("no free port found")


class ManagedProcess:
    """At most one running child process at a time, stopped by PID (shared by the chatter
    nodes here and the peers' launchers in benchmarks/peers)."""

    proc: subprocess.Popen[bytes] | None = None
    _out: IO[bytes] | None = None  # the child's output file, closed in reap()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.running():
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    async def wait_exit(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        with trio.fail_after(timeout):
            while self.proc.poll() is None:
                await trio.sleep(0.02)
        self.reap()
        return self.proc.returncode

    def reap(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


async def stop_processes(nodes: Sequence[ManagedProcess]) -> None:
    """SIGKILL every node's process by PID, then wait for each to exit."""
    for n in nodes:
        n.kill(signal.SIGKILL)
    for n in nodes:
        if n.proc is not None:
            with contextlib.suppress(trio.TooSlowError):
                await n.wait_exit(10)


@dataclass
class LocalNode(ManagedProcess):
    name: str
    port: int
    args: list[str]
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    _out: IO[bytes] | None = None
    client: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=2.0))

    @property
    def addr(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        assert not self.running(), f"{self.name} already running"
        check_start(f"chatterd {self.name}")
        self._out = open(self.log_path, "ab")  # closed in reap()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chatterd", *self.args],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
        )

    async def get(self, path: str) -> Any:
        r = await self.client.get(self.url + path)
        return r.json()

    async def members(self) -> dict[str, dict[str, Any]]:
        return {m["name"]: m for m in await self.get("/v1/members")}

    async def events(self, since: int = 0) -> list[dict[str, Any]]:
        return await self.get(f"/v1/events?since={since}")

    async def try_get(self, path: str) -> Any | None:
        try:
            return await self.get(path)
        except (httpx.HTTPError, ValueError):
            return None


class LocalCluster:
    def __init__(self, log_dir: Path, extra_args: Sequence[str] = (), env: dict[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.extra_args = list(extra_args)
        self.env = {**os.environ, "CHATTER_LOG": "info", **(env or {})}
        self.nodes: list[LocalNode] = []

    def add(
        self, name: str | None = None, join: Sequence[LocalNode] | None = None, args: Sequence[str] = ()
    ) -> LocalNode:
        port = free_port()
        name = name or f"n{len(self.nodes)}"
        seeds = list(join) if join is not None else self.nodes[:1]
        argv = ["--listen", f"{HOST}:{port}", "--name", name, "--log-format", "json", *self.extra_args, *args]
        for s in seeds:
            argv += ["--join", s.addr]
        node = LocalNode(name, port, argv, self.log_dir / f"{name}.log", self.env)
        node.start()
        self.nodes.append(node)
        return node

    def node(self, name: str) -> LocalNode:
        return next(n for n in self.nodes if n.name == name)

    def running(self) -> list[LocalNode]:
        return [n for n in self.nodes if n.running()]

    async def wait_for(self, check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.05) -> float:
        """Poll ``check`` until it is true; returns the seconds it took. Raises TimeoutError."""
        start = trio.current_time()
        with trio.fail_after(timeout):
            while not await check():
                await trio.sleep(interval)
        return trio.current_time() - start

    async def states(self, observer: LocalNode) -> dict[str, str]:
        ms = await observer.try_get("/v1/members")
        return {m["name"]: m["state"] for m in ms} if ms else {}

    async def wait_converged(self, timeout: float = 20.0) -> float:
        """Until every running node sees every running node alive."""

        async def check() -> bool:
            live = self.running()
            want = {n.name for n in live}
            for n in live:
                st = await self.states(n)
                if {k for k, v in st.items() if v == "alive"} != want:
                    return False
            return True

        return await self.wait_for(check, timeout)

    async def wait_state(self, name: str, state: str, timeout: float = 20.0) -> float:
        """Until every other running node shows ``name`` in ``state``."""

        async def check() -> bool:
            for n in self.running():
                if n.name != name and (await self.states(n)).get(name) != state:
                    return False
            return True

        return await self.wait_for(check, timeout)

    async def stop_all(self) -> None:
        await stop_processes(self.nodes)
        for n in self.nodes:
            await n.client.aclose()


@contextlib.asynccontextmanager
async def local_cluster(
    n: int,
    extra_args: Sequence[str] = (),
    log_dir: Path | str | None = None,
    converge: bool = True,
    env: dict[str, str] | None = None,
) -> AsyncIterator[LocalCluster]:
    """Start n nodes joining through the first; stop them all, by PID, on the way out."""
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="chatter-"))
        cluster = LocalCluster(Path(log_dir), extra_args, env)
        try:
            for _ in range(n):
                cluster.add()
            if converge:
                await cluster.wait_converged(timeout=20 + n)
            yield cluster
        finally:
            with trio.CancelScope(shield=True):
                await cluster.stop_all()
