"""etcd on a host of :mod:`chatterd.testing.hosts`, for the hosts tests that take a lock through it
(test_lock_partition.py, test_sequencer_partition.py): ``from etcd_on_host import EtcdOnHost``."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import trio

from chatterd.testing.hosts import Host
from chatterd.testing.nshttp import namespace_client

ETCD_PORT = 2379


class EtcdOnHost:
    """A single-member etcd inside ``host`` (client port 2379 on its address), stopped by PID with
    the network; read through a client in that host's namespace. Its keys are read under
    ``prefix`` (chatterd's lock key is the ``--lock`` prefix plus the role)."""

    def __init__(self, host: Host, base: Path, prefix: str = "engine/") -> None:
        self.host = host
        self.prefix = prefix
        self.url = f"http://{host.addr}:{ETCD_PORT}"
        self.data_dir = base / "etcd-data"
        self.log_path = base / "etcd.log"
        self.client = namespace_client(host.netns, timeout=2.0)

    def start(self) -> None:
        peer = "http://127.0.0.1:2380"
        argv = [
            "etcd", "--name", "default", "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"default={peer}",
        ]  # fmt: skip
        with open(self.log_path, "ab") as out:  # the child has its own copy
            self.host.popen(argv, output=out, what="etcd")

    async def wait_ready(self, timeout: float = 30.0) -> None:
        with trio.fail_after(timeout):
            while True:
                try:
                    r = await self.client.get(self.url + "/health")
                    if r.status_code == 200 and r.json().get("health") == "true":
                        return
                except (httpx.HTTPError, ValueError):  # not listening yet
                    pass
                await trio.sleep(0.1)

    async def key(self, role: str) -> tuple[str, int] | None:
        """(value, create_revision) of ``prefix + role``, None if it does not exist."""
        body = {"key": base64.b64encode((self.prefix + role).encode()).decode()}
        r = await self.client.post(self.url + "/v3/kv/range", json=body)
        r.raise_for_status()
        kvs = r.json().get("kvs", [])
        if not kvs:
            return None
        return base64.b64decode(kvs[0]["value"]).decode(), int(kvs[0]["create_revision"])
