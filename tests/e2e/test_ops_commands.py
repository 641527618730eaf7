"""The operator commands of Serf that chatter lacked, against real nodes: info, force-leave
(--prune), monitor (at debug while the node logs at info), and how a command finds its node
without --http (the runtime file of a node of this user)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from e2e_helpers import FAILURE_TIMEOUT, Completed, base_env, run_cli, wait_until

from chatterd.testing import HOST, LocalNode, local_cluster

pytestmark = pytest.mark.e2e


def private_dir(tmp_path: Path) -> Path:
    d = tmp_path / "run"
    d.mkdir(mode=0o700)
    return d


def one_error(res: Completed, code: int) -> str:
    assert res.returncode == code and res.stdout == "", str(res)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("chatterd: error: "), str(res)
    return lines[0]


async def state_at(node: LocalNode, name: str) -> str | None:
    members = await node.try_get("/v1/members") or []
    return next((m["state"] for m in members if m["name"] == name), None)


async def test_info_force_leave_and_monitor(tmp_path: Path) -> None:
    env = base_env(XDG_RUNTIME_DIR=str(private_dir(tmp_path)), CHATTER_HTTP_ADDR=None)

    async def ctl(*args: str) -> Completed:
        return await run_cli("chatterd", *args, env=env)

    async with local_cluster(0, log_dir=tmp_path, converge=False, env=env) as cluster:
        a, b, c = cluster.add("a", args=["--tag", "dc=east"]), cluster.add("b"), cluster.add("c")
        await cluster.wait_converged()

        info = json.loads((await ctl("--http", a.addr, "info", "--json")).stdout)
        assert info["node"]["name"] == "a" and info["node"]["tags"] == {"dc": "east"}
        assert info["protocol"] == {"version": 1, "profile": "lan", "encryption": "plaintext", "label": ""}
        assert info["config"]["fanout"] == 3 and info["config"]["suspect_after"] > 0
        assert info["counters"]["datagrams_in"] > 0 and info["members"]["alive"] == 3
        text = (await ctl("info", "--http", a.addr)).stdout
        assert "node:\n\tname = a\n" in text and "\nconfig:\n" in text and "\tfanout = 3\n" in text

        monitor_out = tmp_path / "monitor.jsonl"
        with open(monitor_out, "wb") as out:
            monitor = subprocess.Popen(
                [sys.executable, "-m", "chatterd", "monitor", "--log-level", "debug", "--json", "--http", b.addr],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            # A datagram b drops is a debug line: the monitor gets it, b's own log (info) does not.
            async def monitored(event: str) -> bool:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.sendto(b"not json", (HOST, b.port))
                await trio.sleep(0.2)
                rows = [json.loads(line) for line in monitor_out.read_text().splitlines() if line.startswith("{")]
                return any(r["event"] == event for r in rows)

            await wait_until(lambda: monitored("datagram_dropped"), FAILURE_TIMEOUT, "a debug line in the monitor")
            assert "datagram_dropped" not in b.log_path.read_text()

            live = one_error(await ctl("force-leave", "c", "--http", a.addr), 2)
            assert "c is alive: a live member cannot be force-left (it would refute)" in live
            assert "no member 'zz'" in one_error(await ctl("force-leave", "zz", "--http", a.addr), 2)

            c.kill(signal.SIGKILL)
            for n in (a, b):
                await wait_until(lambda n=n: _is(n, "c", "dead"), FAILURE_TIMEOUT, f"c dead at {n.name}")
            res = await ctl("--http", a.addr, "force-leave", "c")
            assert res.returncode == 0 and res.stdout.startswith("c (dead) moved to left"), str(res)
            await wait_until(lambda: _is(b, "c", "left"), FAILURE_TIMEOUT, "c left at b")
            res = await ctl("force-leave", "c", "--prune", "--json", "--http", a.addr)
            assert json.loads(res.stdout)["pruned"] is True, str(res)
            for n in (a, b):
                await wait_until(lambda n=n: _is(n, "c", None), FAILURE_TIMEOUT, f"c erased at {n.name}")
            await wait_until(lambda: monitored("member_pruned"), FAILURE_TIMEOUT, "b's member_pruned in the monitor")
        finally:
            monitor.kill()
            monitor.wait(timeout=10)


async def _is(node: LocalNode, name: str, state: str | None) -> bool:
    return await state_at(node, name) == state


async def test_commands_find_the_node_of_this_user(tmp_path: Path) -> None:
    rundir = private_dir(tmp_path)
    env = base_env(XDG_RUNTIME_DIR=str(rundir), CHATTER_HTTP_ADDR=None)
    async with local_cluster(0, log_dir=tmp_path, converge=False, env=env) as cluster:
        a = cluster.add("a")
        await cluster.wait_converged()
        await wait_until(lambda: _has_runfile(rundir, a.port), FAILURE_TIMEOUT, "a's runtime file")
        res = await run_cli("chatterd", "members", "--json", env=env)  # no --http, no CHATTER_HTTP_ADDR
        assert res.returncode == 0 and res.stderr == "", str(res)
        assert [m["name"] for m in json.loads(res.stdout)] == ["a"]

        b = cluster.add("b", join=[a])
        await cluster.wait_converged()
        await wait_until(lambda: _has_runfile(rundir, b.port), FAILURE_TIMEOUT, "b's runtime file")
        res = await run_cli("chatterd", "info", "--json", env=env)
        low = min((a, b), key=lambda n: n.port)
        assert res.returncode == 0 and json.loads(res.stdout)["node"]["name"] == low.name, str(res)
        assert "2 nodes of this user run here" in res.stderr and f"asking {low.name} at {low.addr}" in res.stderr
        # The address before the command, or in the environment, wins.
        high = b if low is a else a
        res = await run_cli("chatterd", "--http", high.addr, "info", "--json", env=env)
        assert json.loads(res.stdout)["node"]["name"] == high.name and res.stderr == "", str(res)
        res = await run_cli("chatterd", "info", "--json", env=env | {"CHATTER_HTTP_ADDR": high.addr})
        assert json.loads(res.stdout)["node"]["name"] == high.name and res.stderr == "", str(res)
        for n in (a, b):
            n.kill(signal.SIGTERM)  # a graceful stop removes the runtime file
            assert await n.wait_exit() == 0
        assert not any(p.name.startswith("node-") for p in (rundir / "chatter").iterdir())


async def _has_runfile(rundir: Path, port: int) -> bool:
    return (rundir / "chatter" / f"node-127.0.0.1-{port}.json").exists()


def test_version_of_both_tools() -> None:
    for module, prog in (("chatterd", "chatterd"), ("chatter_inject", "chatter-inject")):
        res = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0 and res.stdout.startswith(f"{prog} "), res
        assert res.stdout.split()[1][0].isdigit(), res.stdout
