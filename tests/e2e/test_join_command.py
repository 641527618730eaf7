"""``chatterd join``, as ``serf join``: two clusters merge when one node knocks on the other;
an address where nothing answers is reported, and the command exits 1 when none joined."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from e2e_helpers import FAILURE_TIMEOUT, base_env, run_cli

from chatterd.testing import HOST, local_cluster

pytestmark = pytest.mark.e2e


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def test_join_merges_two_clusters_and_reports_who_did_not_answer(tmp_path: Path) -> None:
    env = base_env(CHATTER_HTTP_ADDR=None)
    async with local_cluster(0, log_dir=tmp_path, converge=False, env=env) as cluster:
        a = cluster.add("a")
        cluster.add("b")  # joins a
        c = cluster.add("c", join=[])  # a cluster of its own

        async def a_sees_b_and_c_is_up() -> bool:
            return (await cluster.states(a)).get("b") == "alive" and await c.try_get("/v1/members") is not None

        await cluster.wait_for(a_sees_b_and_c_is_up, FAILURE_TIMEOUT * 4)
        assert set(await c.members()) == {"c"}

        res = await run_cli("chatterd", "join", a.addr, "--http", c.addr, env=env)
        assert res.returncode == 0, str(res)
        assert f"joined      {a.addr}  (a)" in res.stdout and "joined 1 of 1 address;" in res.stdout
        await cluster.wait_converged(timeout=FAILURE_TIMEOUT * 4)  # every node sees all three alive

        nobody = f"{HOST}:{free_udp_port()}"
        res = await run_cli("chatterd", "--http", a.addr, "join", nobody, "--timeout", "1", "--json", env=env)
        assert res.returncode == 1, str(res)
        out = json.loads(res.stdout)
        assert out["joined"] == [] and out["not_joined"] == [nobody] and out["members"] == 3

        bad = await run_cli("chatterd", "join", "not-an-address", "--http", a.addr, env=env)
        assert bad.returncode == 2 and "chatterd: error:" in bad.stderr, str(bad)
