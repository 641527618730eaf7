"""A real node started from nothing but a config file (``chatterd --config FILE``): it joins,
shows the file's name, tags and role to the cluster, and leaves gracefully on SIGTERM (what
systemd and Kubernetes send); a bad file stops it before it binds anything."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from e2e_helpers import FAILURE_TIMEOUT, base_env, run_cli, wait_until

from chatterd.testing import HOST, free_port, local_cluster

pytestmark = pytest.mark.e2e


@contextlib.contextmanager
def chatterd_from_config(config: Path, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m chatterd --config FILE`` and no other argument; SIGKILLed by PID on the way out."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatterd", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=base_env(CHATTER_LOG="info"),
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


async def api_health(url: str) -> dict[str, Any]:
    """The node's /v1/health, once its API listens (it binds after the gossip socket)."""
    async with httpx.AsyncClient(timeout=2.0) as client:
        answer: dict[str, Any] = {}

        async def answered() -> bool:
            try:
                answer.update((await client.get(url + "/v1/health")).json())
            except httpx.HTTPError:
                return False
            return True

        await wait_until(answered, FAILURE_TIMEOUT, f"{url}/v1/health to answer")
        return answer


async def test_a_node_configured_by_a_file_joins_with_its_tags_and_role_and_leaves_on_sigterm(
    tmp_path: Path,
) -> None:
    async with local_cluster(1, extra_args=["--profile", "local"], log_dir=tmp_path) as cluster:
        seed = cluster.nodes[0]
        port = free_port()
        config = tmp_path / "chatterd.toml"
        config.write_text(
            f'listen = "{HOST}:{port}"\n'
            'name = "from-file"\n'
            f'join = ["{seed.addr}"]\n'
            'tag = { dc = "east", rack = "r12" }\n'
            'role = ["leader:5"]\n'
            'profile = "local"\n'
            'log_format = "json"\n'
            f'data_dir = "{tmp_path / "data"}"\n'
        )
        with chatterd_from_config(config, tmp_path / "from-file.log") as proc:

            async def seen_alive_with_tags() -> bool:
                assert proc.poll() is None, (tmp_path / "from-file.log").read_text()
                member = (await seed.members()).get("from-file")
                return member is not None and member["state"] == "alive" and member["tags"].get("dc") == "east"

            await wait_until(seen_alive_with_tags, FAILURE_TIMEOUT, "the seed to see from-file alive with dc=east")
            member = (await seed.members())["from-file"]
            assert member["addr"] == f"{HOST}:{port}"
            assert member["tags"]["rack"] == "r12"
            health = await api_health(f"http://{HOST}:{port}")  # the API at the file's listen port
            assert health["name"] == "from-file"
            roles = {r["role"]: r for r in await seed.get("/v1/roles")}
            assert roles["leader"]["candidates"] == {"from-file": 5}
            assert (tmp_path / "data" / "node.json").exists()  # data_dir from the file

            os.kill(proc.pid, signal.SIGTERM)  # what systemd's stop and the kubelet send

            async def seen_left() -> bool:
                return (await seed.members())["from-file"]["state"] == "left"

            await wait_until(seen_left, FAILURE_TIMEOUT, "the seed to see from-file leave")
            with trio.fail_after(FAILURE_TIMEOUT):
                while proc.poll() is None:
                    await trio.sleep(0.05)
            assert proc.returncode == 0


async def test_a_bad_config_file_stops_the_daemon_before_it_binds(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "chatterd.toml"
    config.write_text(f'listen = "{HOST}:{port}"\njoin = ["{HOST}:1"]\ncheck_interval = "soon"\n')
    res = await run_cli("chatterd", "--config", str(config), env=base_env())
    assert res.returncode == 2, str(res)
    assert res.stdout == "", str(res)
    assert res.stderr == (
        f"chatterd: error: config file {config}: key 'check_interval': expected a number, got 'soon'\n"
    ), str(res)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, port))  # still free: nothing was started
