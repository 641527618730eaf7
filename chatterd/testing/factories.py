"""The factories behind the pytest fixtures; plain Python and trio, usable without pytest.

:class:`SimFactory` makes seeded simulations (chatterd.sim) in virtual time;
:class:`ClusterFactory` starts clusters of real chatterd processes and stops every one of
them, by PID, in :meth:`ClusterFactory.aclose`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from chatterd.core.config import Config
from chatterd.sim import Simulation
from chatterd.testing.processes import LocalCluster, LocalNode

DEFAULT_SEED = 1


class SimFactory:
    """``sim = factory(n)``: a :class:`chatterd.sim.Simulation` with ``n`` nodes (``n0`` ...
    ``n{n-1}``, all joined through ``n0``) that has run ``settle`` virtual seconds.

    ``seed`` defaults to the factory's seed, so a test is reproducible as it stands; ``loss``
    is the probability that a datagram is dropped. With ``n=0`` the simulation is empty: add
    nodes with ``sim.add_node(name, join=[...], tags=...)``.
    """

    def __init__(self, seed: int = DEFAULT_SEED) -> None:
        self.seed = seed
        self.simulations: list[tuple[int, Simulation]] = []  # (seed, simulation), in order made

    def __call__(
        self,
        n: int = 0,
        *,
        seed: int | None = None,
        loss: float = 0.0,
        latency: tuple[float, float] | None = None,
        config: Config | None = None,
        settle: float = 5.0,
        prefix: str = "n",
    ) -> Simulation:
        seed = self.seed if seed is None else seed
        kw: dict[str, Any] = {}
        if latency is not None:
            kw["latency"] = latency
        if config is not None:
            kw["config"] = config
        sim = Simulation(seed=seed, loss=loss, **kw)
        self.simulations.append((seed, sim))
        if n:
            sim.start_cluster(n, settle=settle, prefix=prefix)
        return sim

    def describe(self) -> str:
        """One line per simulation made: its seed and how far it ran (for failure reports)."""
        return "\n".join(
            f"simulation {i}: seed={seed} loss={sim.loss} virtual time={sim.now:.3f} s live={len(sim.live_names())}"
            for i, (seed, sim) in enumerate(self.simulations)
        )


class ClusterFactory:
    """``cluster = await factory(n)``: ``n`` chatterd processes on 127.0.0.1 (free ports), joined
    through the first and, with ``converge``, all seeing each other alive.

    ``args`` are added to every node's command line (after the factory's own ``extra_args``),
    ``env`` to its environment. The cluster is a :class:`~chatterd.testing.LocalCluster`: add
    nodes with ``cluster.add(name, args=...)``, kill them with ``cluster.nodes[i].kill()``.
    Each cluster logs to its own directory under ``log_dir``. :meth:`aclose` stops every
    process of every cluster made, by PID, whatever state they are in.
    """

    def __init__(self, log_dir: Path, extra_args: Sequence[str] = (), env: Mapping[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.clusters: list[LocalCluster] = []

    async def __call__(
        self,
        n: int = 3,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        converge: bool = True,
        timeout: float | None = None,
    ) -> LocalCluster:
        log_dir = self.log_dir / f"cluster-{len(self.clusters)}"
        log_dir.mkdir(parents=True, exist_ok=True)
        cluster = LocalCluster(log_dir, [*self.extra_args, *args], {**self.env, **(env or {})})
        self.clusters.append(cluster)  # before any node starts: aclose() stops what did
        for _ in range(n):
            cluster.add()
        if converge and n:
            await cluster.wait_converged(timeout=20 + n if timeout is None else timeout)
        return cluster

    def nodes(self) -> list[LocalNode]:
        return [node for c in self.clusters for node in c.nodes]

    def kill_all(self) -> None:
        """SIGKILL, by PID, every node still running (synchronous: the last-resort cleanup)."""
        for node in self.nodes():
            with contextlib.suppress(ProcessLookupError):
                node.kill()
            if node.proc is not None:
                with contextlib.suppress(Exception):
                    node.proc.wait(timeout=10)
            node.reap()

    async def aclose(self) -> None:
        """Stop every node of every cluster by PID and wait for them (shielded from cancellation)."""
        with trio.CancelScope(shield=True):
            for cluster in self.clusters:
                await cluster.stop_all()

    def log_tails(self, lines: int = 10) -> str:
        """The last ``lines`` lines of every node's log (for failure reports)."""
        out = []
        for node in self.nodes():
            try:
                tail = node.log_path.read_text(errors="replace").splitlines()[-lines:]
            except OSError as e:
                tail = [f"(unreadable: {e})"]
            state = "running" if node.running() else f"exited {node.proc.returncode if node.proc else '-'}"
            out.append(f"--- {node.name} ({node.addr}, {state}) {node.log_path}")
            out.extend(tail)
        return "\n".join(out)
