"""chatter nodes for the comparison: ``chatterd.testing.LocalNode`` processes, read through their API.

Rows come from each node's ``GET /v1/events`` (read incrementally with
``benchmarks._lib.nodeapi.EventLog``), whose ``received_at`` is the node's clock when it recorded
the change or the delivery. Broadcasts are posted with ``chatter-inject`` as a user message
``{"bench": {"id": BID}}``; the origin delivers it to itself too.

``chatter-sealed``: every node started with the same ``--encrypt KEY`` (a new random key,
as ``chatterd keygen`` makes) and ``--label``, and ``chatter-inject`` given them too, so
every datagram of the run is sealed; each node's ``GET /v1/health`` must say
``"encryption": "on"`` (and ``"off"`` for the plaintext systems) before it counts as ready.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from benchmarks._lib.inject import chatter_inject
from benchmarks._lib.nodeapi import EventLog, log_record
from benchmarks.peers import ALIVE, FAILED, HOST, LEFT, SUSPECT, USER, LineTail, PeerCluster, PeerNode, Row, as_node
from chatterd.core.config import ENCRYPT_KEY_ENV
from chatterd.keyfile import generate_key
from chatterd.testing import LocalNode, free_port

KINDS = {"member-failed": FAILED, "member-leave": LEFT, "member-suspect": SUSPECT}
STATES = {"alive": ALIVE, "suspect": SUSPECT, "dead": FAILED, "left": LEFT}
LABEL = "chatter-bench"  # --label of the sealed systems: authenticated with every datagram


class ChatterNode(PeerNode):
    def __init__(self, name: str, port: int, local: LocalNode) -> None:
        super().__init__(name, port)
        self.local = local

        self.pids: list[int] = []  # one per life, in order
        self.log_tail = LineTail(local.log_path)
        self.started_lines = 0

    def start(self) -> None:
        self.local.start()
        self.proc = self.local.proc
        assert self.proc is not None
        self.pids.append(self.proc.pid)
        self.lives += 1

    def read_up(self) -> None:
        """The runtime's ``started`` log line of each life (it has bound its socket; the API follows)."""
        for line in self.log_tail.read():
            rec = log_record(line) if '"started"' in line else None
            if rec is not None and rec[1].get("event") == "started" and self.started_lines < len(self.pids):
                self.up[self.pids[self.started_lines]] = rec[0]
                self.started_lines += 1

    def reap(self) -> None:
        self.local.reap()


class ChatterCluster(PeerCluster):
    def __init__(self, log_dir: Path, profile: str = "lan", sealed: bool = False) -> None:
        super().__init__(log_dir)
        self.profile = profile
        self.system = "chatter" + ("" if profile == "lan" else f"-{profile}") + ("-sealed" if sealed else "")
        self.key = generate_key() if sealed else None  # one key for the whole cluster
        # $CHATTER_ENCRYPT_KEY of the caller left out: a plaintext system must stay plaintext
        self.env = {**{k: v for k, v in os.environ.items() if k != ENCRYPT_KEY_ENV}, "CHATTER_LOG": "info"}
        self.log = EventLog()
        self.ready_pids: set[int] = set()  # processes whose API has answered once

    def new_node(self, name: str, seed: PeerNode | None) -> ChatterNode:
        port = free_port()
        argv = ["--listen", f"{HOST}:{port}", "--name", name, "--log-format", "json", "--profile", self.profile]
        if seed is not None:
            argv += ["--join", seed.addr]
        if self.key is not None:
            argv += ["--encrypt", self.key, "--label", LABEL]
        local = LocalNode(name, port, argv, self.log_dir / f"{self.system}-{name}.log", self.env)
        return ChatterNode(name, port, local)

    def _local(self, node: PeerNode) -> LocalNode:
        return as_node(node, ChatterNode).local

    async def ready(self, node: PeerNode) -> bool:
        health = await self._local(node).try_get("/v1/health") if node.running() else None
        if health is None:
            return False
        want = "off" if self.key is None else "on"
        if health.get("encryption") != want:
            raise RuntimeError(f"{self.system} {node.name}: encryption {health.get('encryption')!r}, not {want!r}")
        assert node.pid is not None
        self.ready_pids.add(node.pid)
        return True

    async def poll(self) -> None:
        for node in self.nodes:
            as_node(node, ChatterNode).read_up()
        for node in self.running():
            pid = node.pid
            assert pid is not None
            if pid not in self.ready_pids and not await self.ready(node):
                continue  # still starting: its rows are read from seq 0 once it answers
            mark, problems = len(self.log.rows), len(self.log.problems)
            await self.log.scan([self._local(node)])
            if not node.running():  # stopped while being read: not a lost read
                del self.log.problems[problems:]
            for _, r in self.log.rows[mark:]:
                row = _row(node.name, pid, r)
                if row is not None:
                    self.rows.append(row)

    async def broadcast(self, node: PeerNode, bid: str) -> str | None:
        body = json.dumps({"bench": {"id": bid}})
        proc = await chatter_inject(node.addr, body, self.key, LABEL if self.key is not None else "")
        return None if proc.returncode == 0 else proc.stderr.decode().strip() or f"exit status {proc.returncode}"

    async def counters(self, node: PeerNode) -> dict[str, int]:
        health = await self._local(node).try_get("/v1/health")
        if not health:
            return {}
        # the node counts these but lists a counter only once it is non-zero
        return {"suspicions": 0, "refutations": 0, "deaths": 0, **health["counters"]}

    async def aclose(self) -> None:
        for node in self.nodes:
            await self._local(node).client.aclose()


def _row(observer: str, life: int, r: dict[str, Any]) -> Row | None:
    kind = r["kind"]
    if kind == "user":
        bench = r["payload"].get("bench") if isinstance(r["payload"], dict) else None
        if isinstance(bench, dict) and isinstance(bench.get("id"), str):
            return Row(observer, life, r["received_at"], USER, bench["id"])
        return None
    if not kind.startswith("member-"):
        return None
    mapped = KINDS.get(kind) or STATES.get(r["payload"].get("state", ""))
    if mapped is None:
        return None
    return Row(observer, life, r["received_at"], mapped, r["origin"])
