"""kinship nodes for the comparison: one ``benchmarks.peers.kinship_node`` process per node.

Rows come from each process's JSON-lines file (``t`` = ``time.time()`` in that process when it
read the event from kinship's stream). Broadcasts go through the node's control socket
(``broadcast BID``), which records a ``sent`` row just before ``Cluster.broadcast``; kinship
does not deliver a broadcast to its own origin, so the ``sent`` row is the reference time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from benchmarks._lib.cli import REPO
from benchmarks.peers import ALIVE, FAILED, LEFT, SENT, SUSPECT, USER, LineTail, PeerCluster, PeerNode, Row, as_node
from chatterd.testing import free_port

KINDS = {"alive": ALIVE, "suspect": SUSPECT, "failed": FAILED, "left": LEFT, "user": USER, "sent": SENT}


class KinshipNode(PeerNode):
    def __init__(self, cluster: KinshipCluster, name: str, port: int, seed: PeerNode | None) -> None:
        super().__init__(name, port)
        self.cluster = cluster
        self.seed = seed
        self.control = str(cluster.log_dir / f"{cluster.system}-{name}.sock")
        self.tails: dict[int, LineTail] = {}
        self.ready_pid: int | None = None  # the process that wrote its "ready" row

    def start(self) -> None:
        c = self.cluster
        events = c.log_dir / f"{c.system}-{self.name}.{self.new_life()}.jsonl"
        argv = [
            sys.executable,
            "-m",
            "benchmarks.peers.kinship_node",
            "--name",
            self.name,
            "--bind",
            self.addr,
            "--events",
            str(events),
            "--control",
            self.control,
            "--preset",
            c.preset,
        ]
        if self.seed is not None:
            argv += ["--seed", self.seed.addr]
        self._out = open(c.log_dir / f"{c.system}-{self.name}.log", "ab")  # closed in reap()
        self.proc = subprocess.Popen(
            argv, stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO, env=c.env
        )
        self.tails[self.proc.pid] = LineTail(events)

    async def command(self, line: str, timeout: float = 5.0) -> str:
        with trio.fail_after(timeout):
            stream = await trio.open_unix_socket(self.control)
            async with stream:
                await stream.send_all(line.encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break
                    data += chunk
        return data.decode().strip()


class KinshipCluster(PeerCluster):
    delivers_to_origin = False

    def __init__(self, log_dir: Path, preset: str = "lan") -> None:
        super().__init__(log_dir)
        self.preset = preset
        self.system = "kinship" if preset == "lan" else f"kinship-{preset}"
        pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        self.env = {**os.environ, "PYTHONPATH": pythonpath}

    def new_node(self, name: str, seed: PeerNode | None) -> KinshipNode:
        return KinshipNode(self, name, free_port(), seed)

    async def ready(self, node: PeerNode) -> bool:
        await self.poll()
        k = as_node(node, KinshipNode)
        return node.running() and k.ready_pid == node.pid

    async def poll(self) -> None:
        for node in self.nodes:
            k = as_node(node, KinshipNode)
            for pid, tail in k.tails.items():
                for line in tail.read():
                    try:
                        ev: dict[str, Any] = json.loads(line)
                    except ValueError:
                        continue
                    if ev["kind"] == "ready":
                        k.ready_pid = pid
                    elif ev["kind"] == "starting":
                        k.up[pid] = ev["t"]
                    kind = KINDS.get(ev["kind"])
                    if kind is not None:
                        self.rows.append(Row(k.name, pid, ev["t"], kind, ev["subject"]))

    async def broadcast(self, node: PeerNode, bid: str) -> str | None:
        try:
            answer = await as_node(node, KinshipNode).command(f"broadcast {bid}")
        except (OSError, trio.TooSlowError) as e:
            return f"control socket: {e!r}"
        return None if answer == "ok" else answer

    async def counters(self, node: PeerNode) -> dict[str, int]:
        try:
            answer = await as_node(node, KinshipNode).command("stats")
            return {k: v for k, v in json.loads(answer).items() if isinstance(v, int)}
        except (OSError, ValueError, trio.TooSlowError):
            return {}
