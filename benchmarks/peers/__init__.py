"""Launchers for the systems the benchmarks compare: chatter (plaintext or sealed), HashiCorp Serf and kinship.

Each launcher starts N nodes of one system on 127.0.0.1 (free ports), joins them through the
first node (the seed), stops one by PID (SIGKILL, or the system's graceful signal), restarts
it with the same name and port, posts a broadcast, and turns what every node reported into
``Row``s: one membership change or one delivery, as one process of one node saw it, with the
Unix time at which that process recorded it. The benchmarks only look at rows, so every
system is measured the same way:

    async with open_cluster("serf", log_dir) as cluster:
        t0 = await cluster.start(10)
        ...
        cluster.nodes[3].kill()
        await cluster.poll()
        failed = [r for r in cluster.rows if r.kind == "failed" and r.subject == "n3"]

Row kinds: ``alive`` (joined, recovered, refuted), ``suspect``, ``failed``, ``left`` (about a
member named ``subject``), ``user`` (a broadcast whose benchmark id is ``subject`` was
delivered), ``sent`` (the origin handed that broadcast to the protocol, when the system does
not deliver a broadcast to its own origin). Every process a launcher starts is stopped by it,
by PID, when the ``open_cluster`` block exits, whatever happened inside.
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import trio

from benchmarks._lib.phases import POLL, wait_until
from chatterd.testing import ManagedProcess, stop_processes

HOST = "127.0.0.1"
ALIVE, SUSPECT, FAILED, LEFT, USER, SENT = "alive", "suspect", "failed", "left", "user", "sent"
MEMBER_KINDS = frozenset({ALIVE, SUSPECT, FAILED, LEFT})


@dataclass(frozen=True, slots=True)
class Row:
    observer: str  # the node that recorded it
    life: int  # the PID of the observer's process: a restarted node is a new life
    t: float  # Unix time at which the observer recorded it
    kind: str  # alive, suspect, failed, left, user, sent
    subject: str  # the member it is about, or the broadcast's benchmark id
    source: str = "main"  # which record it came from (Serf: "main" = event handler, "log" = agent log)


class PeerNode(ManagedProcess, abc.ABC):
    """One node: a name, a gossip port, and at most one running process at a time."""

    name: str
    port: int

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.proc = None
        self._out = None
        self.lives = 0  # how many processes this node has had
        self.up: dict[int, float] = {}  # PID → Unix time the process said it was loaded and starting

    @property
    def addr(self) -> str:
        return f"{HOST}:{self.port}"

    @abc.abstractmethod
    def start(self) -> None:
        """Start a new process for this node (same name, same port)."""

    def new_life(self) -> int:
        """Count a new process of this node, which must not be running; its number (1, 2, ...)."""
        assert not self.running(), f"{self.name} already running"
        self.lives += 1
        return self.lives


N = TypeVar("N", bound=PeerNode)


def as_node(node: PeerNode, cls: type[N]) -> N:
    """``node`` as the launcher's own node class."""
    assert isinstance(node, cls)
    return node


class PeerCluster(abc.ABC):
    """N nodes of one system; ``rows`` holds every row read from them so far."""

    system: str  # the label in the tables, e.g. "serf-local"
    graceful_signal: signal.Signals = signal.SIGTERM
    sources: tuple[str, ...] = ("main",)  # row sources this system produces; "main" is the one waited on
    suspect_sources: tuple[str, ...] = ("main",)  # sources that report suspicions at all
    delivers_to_origin = True  # whether the origin of a broadcast also gets a "user" row

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.nodes: list[PeerNode] = []
        self.rows: list[Row] = []

    # -------------------------------------------------------------- to implement

    @abc.abstractmethod
    def new_node(self, name: str, seed: PeerNode | None) -> PeerNode:
        """A node joining through ``seed`` (None: the seed itself); not started."""

    @abc.abstractmethod
    async def ready(self, node: PeerNode) -> bool:
        """Whether the node's current process is up and answering."""

    @abc.abstractmethod
    async def poll(self) -> None:
        """Append the rows recorded since the last poll to ``self.rows``."""

    @abc.abstractmethod
    async def broadcast(self, node: PeerNode, bid: str) -> str | None:
        """Post broadcast ``bid`` through ``node``; None when accepted, else the error."""

    async def counters(self, node: PeerNode) -> dict[str, int]:
        """Protocol counters of the node's current process (suspicions, refutations, ...), if any."""
        return {}

    # -------------------------------------------------------------- shared

    def node(self, name: str) -> PeerNode:
        return next(n for n in self.nodes if n.name == name)

    def running(self) -> list[PeerNode]:
        return [n for n in self.nodes if n.running()]

    def last_up(self) -> float | None:
        """When the last of the running processes said it was loaded and starting (None: unknown yet)."""
        times = [n.up.get(n.pid) for n in self.running() if n.pid is not None]
        return None if any(t is None for t in times) else max(t for t in times if t is not None)

    def lives(self) -> dict[str, int]:
        """Running node name → PID of its current process."""
        return {n.name: n.pid for n in self.nodes if n.running() and n.pid is not None}

    def converged_at(self, source: str = "main") -> float | None:
        """When every running node came to see every other running node alive (None: not yet)."""
        return converged_at(self.rows, self.lives(), source)

    async def until(self, check: Callable[[], bool], timeout: float) -> bool:
        """Read the rows until ``check()`` holds; False if ``timeout`` seconds went by first."""

        async def polled() -> bool:
            await self.poll()
            return check()

        return await wait_until(polled, timeout, POLL)

    async def until_converged(self, timeout: float) -> bool:
        return await self.until(lambda: self.converged_at() is not None, timeout)

    async def wait_ready(self, node: PeerNode, timeout: float = 20.0) -> None:
        with trio.fail_after(timeout):
            while not await self.ready(node):
                if not node.running():
                    raise RuntimeError(f"{self.system} {node.name} exited at start-up (see {self.log_dir})")
                await trio.sleep(0.05)

    async def start(self, n: int) -> float:
        """Start the seed, wait until it answers, then start the n - 1 others at once.

        Returns the Unix time just before the others were started: join convergence is
        measured from there.
        """
        seed = self.new_node("n0", None)
        self.nodes.append(seed)
        seed.start()
        await self.wait_ready(seed)
        t0 = time.time()
        for i in range(1, n):
            node = self.new_node(f"n{i}", seed)
            self.nodes.append(node)
            node.start()
        return t0

    async def stop_all(self) -> None:
        await stop_processes(self.nodes)

    async def aclose(self) -> None:  # noqa: B027 (optional hook)
        """Release what the launcher holds besides the processes (clients, threads)."""


# ------------------------------------------------------------------ views from rows


def views(rows: Iterable[Row], lives: dict[str, int], source: str = "main") -> dict[str, dict[str, tuple[str, float]]]:
    """Observer → member → (state, Unix time it got there), from the current lives' rows."""
    current = set(lives.items())
    out: dict[str, dict[str, tuple[str, float]]] = {name: {} for name in lives}
    for r in rows:
        if r.source != source or r.kind not in MEMBER_KINDS or (r.observer, r.life) not in current:
            continue
        if r.subject == r.observer:
            continue
        seen = out[r.observer]
        state = seen.get(r.subject)
        if state is None or state[0] != r.kind:
            seen[r.subject] = (r.kind, r.t)
    return out


def converged_at(rows: Iterable[Row], lives: dict[str, int], source: str = "main") -> float | None:
    """When every running node came to see every other running node alive, or None if not yet."""
    latest = 0.0
    for observer, seen in views(rows, lives, source).items():
        for name in lives:
            if name == observer:
                continue
            state = seen.get(name)
            if state is None or state[0] != ALIVE:
                return None
            latest = max(latest, state[1])
    return latest


def all_report(rows: Sequence[Row], observers: dict[str, int], kind: str, subject: str, source: str = "main") -> bool:
    """Whether each of ``observers`` (name → life) has a ``kind`` row about ``subject``."""
    got = {(r.observer, r.life) for r in rows if r.kind == kind and r.subject == subject and r.source == source}
    return all(item in got for item in observers.items())


# ------------------------------------------------------------------ incremental readers


class LineTail:
    """Reads the complete lines appended to a file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.rest = b""

    def read(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self.rest + data
        *lines, self.rest = data.split(b"\n")
        return [line.decode(errors="replace") for line in lines]


SYSTEMS = ("chatter", "chatter-local", "chatter-sealed", "serf", "serf-local", "kinship", "kinship-local")
DEFAULT_SYSTEMS = ("chatter", "serf", "serf-local", "kinship")


def make_cluster(system: str, log_dir: Path) -> PeerCluster:
    if system.startswith("chatter"):
        from benchmarks.peers.chatter_cluster import ChatterCluster

        profile = "local" if "-local" in system else "lan"
        return ChatterCluster(log_dir, profile=profile, sealed=system.endswith("-sealed"))
    if system.startswith("serf"):
        from benchmarks.peers.serf_cluster import SerfCluster

        return SerfCluster(log_dir, profile="local" if system.endswith("-local") else "lan")
    if system.startswith("kinship"):
        from benchmarks.peers.kinship_cluster import KinshipCluster

        return KinshipCluster(log_dir, preset="local" if system.endswith("-local") else "lan")
    raise ValueError(f"unknown system {system!r}; known: {', '.join(SYSTEMS)}")


def add_systems_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--systems",
        default=",".join(DEFAULT_SYSTEMS),
        help=f"comma-separated, run in this order (default: {','.join(DEFAULT_SYSTEMS)}; known: {','.join(SYSTEMS)})",
    )


def parse_systems(parser: argparse.ArgumentParser, text: str) -> list[str]:
    """The systems of ``--systems``; a parser error for an unknown one."""
    systems = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {unknown}; known: {', '.join(SYSTEMS)}")
    return systems


def unavailable(systems: Sequence[str]) -> tuple[str, str] | None:
    """(system, why) for the first of ``systems`` that cannot run here, or None."""
    for s in systems:
        why = check_available(s)
        if why:
            return s, why
    return None


def versions(systems: Sequence[str]) -> dict[str, str]:
    """The version of each system in ``systems`` (and of chatter)."""
    out = {}
    if any(s.startswith("serf") for s in systems):
        from benchmarks.peers.serf_cluster import serf_version

        out["serf"] = serf_version() or "missing"
    if any(s.startswith("kinship") for s in systems):
        import kinship

        out["kinship"] = kinship.__version__
    from importlib.metadata import version

    out["chatter"] = version("chatter")
    return out


def check_available(system: str) -> str | None:
    """Why ``system`` cannot run here, or None."""
    if system.startswith("serf"):
        from benchmarks.peers.serf_cluster import serf_version

        if serf_version() is None:
            return "serf not found: apt-get update && apt-get install -y serf"
    if system.startswith("kinship"):
        try:
            import kinship  # noqa: F401
        except ImportError:
            return "kinship not importable: pip install kinship"
    return None


@contextlib.asynccontextmanager
async def open_cluster(system: str, log_dir: Path) -> AsyncIterator[PeerCluster]:
    """A cluster of ``system`` whose processes are all stopped, by PID, on the way out."""
    cluster = make_cluster(system, log_dir)
    try:
        yield cluster
    finally:
        with trio.CancelScope(shield=True):
            await cluster.stop_all()
            await cluster.aclose()


def describe(rows: Sequence[Row]) -> dict[str, Any]:
    """Row counts by kind and source (for the JSON output)."""
    counts: dict[str, int] = {}
    for r in rows:
        key = f"{r.source}:{r.kind}"
        counts[key] = counts.get(key, 0) + 1
    return counts
