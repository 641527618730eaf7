"""A real single-member etcd on 127.0.0.1 for the lock tests (Debian package ``etcd-server``).

Started and stopped by PID; it can be paused (SIGSTOP), resumed, killed and restarted on the
same data directory and ports, to play an etcd outage.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import trio

from chatterd.testing import HOST, ManagedProcess, free_port

READY_TIMEOUT = 30.0  # etcd answers /health within a second or two


class EtcdServer(ManagedProcess):
    def __init__(self, data_dir: Path, log_path: Path) -> None:
        binary = shutil.which("etcd")
        assert binary is not None, "etcd is not installed"
        self.binary = binary
        self.data_dir = data_dir
        self.log_path = log_path
        self.client_port = free_port()
        self.peer_port = free_port()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.client_port}"

    def start(self) -> None:
        assert not self.running(), "etcd already running"
        client, peer = self.url, f"http://{HOST}:{self.peer_port}"
        argv = [
            self.binary,
            "--name", "default",
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"default={peer}",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        self._out = open(self.log_path, "ab")  # closed in reap()
        self.proc = subprocess.Popen(
            argv, stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )

    async def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=1.0, trust_env=False) as http:
            with trio.fail_after(timeout):
                while True:
                    assert self.running(), f"etcd exited; see {self.log_path}"
                    try:
                        r = await http.get("/health")
                        if r.status_code == 200 and r.json().get("health") == "true":
                            return
                    except (httpx.HTTPError, ValueError):
                        pass
                    await trio.sleep(0.1)

    def pause(self) -> None:
        self.kill(signal.SIGSTOP)

    def resume(self) -> None:
        self.kill(signal.SIGCONT)

    async def stop(self) -> None:
        """SIGKILL by PID (works on a paused process too) and wait for it to exit."""
        if self.proc is not None:
            self.kill(signal.SIGKILL)
            await self.wait_exit(15)
