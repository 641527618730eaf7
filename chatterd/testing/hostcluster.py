"""chatterd on the hosts of :mod:`chatterd.testing.hosts`: one node per host, one command for all.

    async with host_cluster(5) as cluster:        # h0..h4, formed from the seed h0
        cluster.node("h2").kill()                 # SIGKILL, by PID
        await cluster.wait_state("h2", "dead", timeout=15)
        cluster.network.host("h3").cut_off()      # or cluster.network[3], or cluster.node("h3").host

Every node runs, inside its host, the command a real host would (:meth:`HostCluster.command`)::

    python -m chatterd --listen 0.0.0.0:2428 --join 198.18.0.1:2428 --name hN --profile local
        --log-format json --http 0.0.0.0:2428 --http-token-file TOKEN --data-dir DIR/hN/data

the same port on every host, the same seed (h0 joins itself: it skips its own address), no
``--advertise`` unless asked: the node picks the address peers reach it at. The API listens
beyond loopback, so every read needs the token: one per cluster, made here, in a file of mode
0600 that every node is given. The test reaches each API from inside that node's host
(:mod:`chatterd.testing.nshttp`), so a cut or a lossy link never stands between the test and
the node it asks. Logs (JSON lines) go to ``DIR/hN.log``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx
import trio

from chatterd.httpauth import write_token
from chatterd.testing.hosts import Host, HostNetwork, host_network
from chatterd.testing.nshttp import namespace_client
from chatterd.testing.processes import ManagedProcess

PORT = 2428  # chatterd's default port, on every host
SEED = 0  # the host every node joins through


class HostNode(ManagedProcess):
    """The chatterd of one host (at most one running at a time), and an API client into it."""

    def __init__(self, cluster: HostCluster, host: Host) -> None:
        self.cluster = cluster
        self.host = host
        self.name = host.name
        self.args: list[str] = []  # of the last start
        self.log_path = cluster.base_dir / f"{host.name}.log"
        self.data_dir = cluster.base_dir / host.name / "data"
        self.client = namespace_client(host.netns, headers={"Authorization": f"Bearer {cluster.token}"})

    def __repr__(self) -> str:
        return f"HostNode({self.name} at {self.addr}, pid={self.pid})"

    @property
    def addr(self) -> str:
        """Where peers reach this node (and where its API listens): ``198.18.0.X:2428``."""
        return f"{self.host.addr}:{PORT}"

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def start(self, args: Sequence[str] | None = None) -> None:
        """Start chatterd in the host with ``args`` (default: those of the last start)."""
        assert not self.running(), f"{self.name} already running"
        if args is not None:
            self.args = list(args)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._out = open(self.log_path, "ab")  # closed in reap()
        argv = [sys.executable, "-m", "chatterd", *self.args]
        self.proc = self.host.popen(argv, output=self._out, env=self.cluster.env, what=f"chatterd {self.name}")

    async def get(self, path: str) -> Any:
        """GET the API's ``path`` (with the token); the decoded JSON. Raises httpx errors."""
        r = await self.client.get(self.url + path)
        r.raise_for_status()
        return r.json()

    async def try_get(self, path: str) -> Any | None:
        """As :meth:`get`, None when the node does not answer (yet)."""
        try:
            return await self.get(path)
        except (httpx.HTTPError, ValueError):
            return None

    async def members(self) -> dict[str, dict[str, Any]]:
        return {m["name"]: m for m in await self.get("/v1/members")}

    async def roles(self) -> dict[str, dict[str, Any]]:
        return {r["role"]: r for r in await self.get("/v1/roles")}

    def saved_peers(self) -> list[str]:
        """The peers' addresses this node saved in its data dir (``node.json``), [] if none yet."""
        try:
            return list(json.loads((self.data_dir / "node.json").read_text()).get("peers", []))
        except (OSError, ValueError):
            return []

    def log_tail(self, lines: int) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class HostCluster:
    """The chatterd nodes of a :class:`~chatterd.testing.hosts.HostNetwork` (one per host, in host
    order), the token of their APIs, and waits on what they report."""

    def __init__(
        self,
        network: HostNetwork,
        base_dir: Path,
        args: Sequence[str] = (),
        advertise: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.network = network
        self.base_dir = base_dir
        self.args = list(args)
        self.advertise = advertise
        self.env = {**os.environ, "CHATTER_LOG": "info", **(env or {})}
        self.token = secrets.token_urlsafe(32)
        self.token_file = base_dir / "http-token"
        write_token(self.token_file, self.token)  # atomically, mode 0600
        self.nodes = [HostNode(self, h) for h in network.hosts]
        self.formed_in: float | None = None  # seconds host_cluster waited for the cluster to form

    def command(self, host: Host, join: bool = True, args: Sequence[str] = ()) -> list[str]:
        """chatterd's arguments on ``host``: the same on every host but for ``--name`` and the
        data dir (and ``--advertise`` with ``advertise``); ``join=False`` drops ``--join``."""
        node = self.nodes[host.index]
        argv = ["--listen", f"0.0.0.0:{PORT}", "--name", host.name, "--profile", "local", "--log-format", "json"]
        argv += ["--http", f"0.0.0.0:{PORT}", "--http-token-file", str(self.token_file)]
        argv += ["--data-dir", str(node.data_dir)]
        if join:
            argv += ["--join", f"{self.network[SEED].addr}:{PORT}"]
        if self.advertise:
            argv += ["--advertise", node.addr]
        return argv + self.args + list(args)

    def start(self, name: str, join: bool = True, args: Sequence[str] = ()) -> HostNode:
        """Start (or start again) the node of host ``name`` with :meth:`command`."""
        node = self.node(name)
        node.start(self.command(node.host, join, args))
        return node

    def node(self, name: str) -> HostNode:
        return next(n for n in self.nodes if n.name == name)

    def running(self) -> list[HostNode]:
        return [n for n in self.nodes if n.running()]

    async def wait_for(
        self,
        check: Callable[[], Awaitable[bool]],
        timeout: float,
        interval: float = 0.1,
        what: str | Callable[[], str] = "the condition",
    ) -> float:
        """Poll ``check`` until it is true; the seconds it took. Raises TimeoutError saying ``what``
        was awaited (a callable: called then, to tell what was last seen)."""
        start = trio.current_time()
        try:
            with trio.fail_after(timeout):
                while not await check():
                    await trio.sleep(interval)
        except trio.TooSlowError:
            raise TimeoutError(f"not within {timeout:g} s: {what() if callable(what) else what}") from None
        return trio.current_time() - start

    async def states(self, observer: HostNode) -> dict[str, str]:
        """Member name -> state, as ``observer`` reports it ({} when it does not answer)."""
        ms = await observer.try_get("/v1/members")
        return {m["name"]: m["state"] for m in ms} if ms else {}

    async def wait_converged(self, timeout: float = 20.0, nodes: Iterable[HostNode] | None = None) -> float:
        """Until each of ``nodes`` (default: every running node) sees exactly these alive.
        Raises TimeoutError with what each reported last."""
        group = list(nodes) if nodes is not None else None
        last: dict[str, dict[str, str]] = {}

        async def check() -> bool:
            live = group if group is not None else self.running()
            want = {n.name for n in live}
            for n in live:
                last[n.name] = st = await self.states(n)
                if {k for k, v in st.items() if v == "alive"} != want:
                    return False
            return True

        return await self.wait_for(check, timeout, what=lambda: f"all alive everywhere; last seen {last}")

    async def wait_state(
        self, name: str, state: str, timeout: float = 20.0, observers: Iterable[HostNode] | None = None
    ) -> float:
        """Until every one of ``observers`` (default: every other running node) shows ``name`` in
        ``state``. Raises TimeoutError with what each reported last."""
        group = list(observers) if observers is not None else None
        last: dict[str, str | None] = {}

        async def check() -> bool:
            for n in group if group is not None else self.running():
                if n.name != name:
                    last[n.name] = (await self.states(n)).get(name)
                    if last[n.name] != state:
                        return False
            return True

        return await self.wait_for(check, timeout, what=lambda: f"{name} {state} everywhere; last seen {last}")

    async def holders(self, role: str, observers: Iterable[HostNode] | None = None) -> dict[str, tuple[Any, Any]]:
        """Observer name -> (holder, epoch) of ``role`` as it reports them ((None, None) if unknown;
        the epoch is 0 while no claim is known)."""
        out: dict[str, tuple[Any, Any]] = {}
        for n in list(observers) if observers is not None else self.running():
            roles = await n.try_get("/v1/roles")
            r: dict[str, Any] = next((x for x in roles or [] if x.get("role") == role), {})
            out[n.name] = (r.get("holder"), r.get("epoch"))
        return out

    def log_tails(self, lines: int = 10) -> str:
        """The last lines of every node's log, for a failure report."""
        return "\n".join(f"--- {n.name} ({n.log_path})\n{n.log_tail(lines)}" for n in self.nodes)

    async def aclose(self) -> None:
        """Close the API clients (the network stops the processes, by PID)."""
        for n in self.nodes:
            await n.client.aclose()
            n.reap()


@contextlib.asynccontextmanager
async def host_cluster(
    n: int = 5,
    args: Sequence[str] = (),
    base_dir: Path | str | None = None,
    advertise: bool = False,
    start: bool = True,
    converge: bool = True,
    timeout: float | None = None,
    grace: float = 5.0,
) -> AsyncIterator[HostCluster]:
    """A network of ``n`` hosts with, if ``start``, chatterd started on each (h0 first, the others
    joining through it) and, with ``converge``, formed: every node sees all ``n`` alive (the
    seconds it took are in ``cluster.formed_in``). Without ``start`` the test starts the nodes
    (``cluster.start(name, args=...)``). On the way out the processes are stopped by PID and
    the namespaces deleted (:func:`~chatterd.testing.hosts.host_network`), whatever happened."""
    with contextlib.ExitStack() as stack:
        if base_dir is None:
            base_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="chatter-hosts-"))
        network = stack.enter_context(host_network(n, grace))
        cluster = HostCluster(network, Path(base_dir), args, advertise)
        try:
            for node in cluster.nodes if start else ():
                cluster.start(node.name)
            if start and converge:
                cluster.formed_in = await cluster.wait_converged(timeout or 20.0 + n)
            yield cluster
        finally:
            with trio.CancelScope(shield=True):
                await cluster.aclose()
