"""`chatterd keys` across 5 real nodes with keyring files: a rotation (install, use, remove)
while one node is down. The removal of the old key is refused while the failed node has not
confirmed the new one; the node comes back with its old keyring file, rejoins, takes the new
key with a repeated install/use, and then the old key goes everywhere, files included."""

from __future__ import annotations

import json
import signal
import tempfile
from pathlib import Path

import pytest
from e2e_helpers import FAILURE_TIMEOUT, Completed, counters, run_cli

from chatterd.testing import LocalCluster, LocalNode

pytestmark = pytest.mark.e2e

K1 = "3ELWUulQ41HA5AFaA9xXsD/8T7uIbcGtwxLDLdRffj4="
K2 = "q6rvbuwKdBvEo8Dqk4WOpVHMQJZn1Gz3ZrNr2Uw6C1s="


async def keys(node: LocalNode, *args: str) -> Completed:
    return await run_cli("chatterd", "keys", *args, "--http", node.addr)


def ring(path: Path) -> list[str]:
    return list(json.loads(path.read_text()))


async def test_a_rotation_with_a_node_down_refuses_then_completes_once_it_is_back() -> None:
    with tempfile.TemporaryDirectory(prefix="chatter-keys-") as tmp:
        d = Path(tmp)
        cluster = LocalCluster(d, ["--profile", "local", "--label", "rotation"])
        files = {f"n{i}": d / f"n{i}.keys" for i in range(5)}
        try:
            for name, path in files.items():
                cluster.add(name, args=["--keyring-file", str(path), "--encrypt", K1])
            await cluster.wait_converged(timeout=25)
            nodes = {n.name: n for n in cluster.nodes}

            res = await keys(nodes["n0"], "list")
            assert res.returncode == 0 and "5 of 5 members answered" in res.stdout and f"{K1}  5/5" in res.stdout, res

            nodes["n4"].kill(signal.SIGKILL)
            await nodes["n4"].wait_exit()
            await cluster.wait_state("n4", "dead", timeout=FAILURE_TIMEOUT)
            res = await keys(nodes["n1"], "install", K2)
            assert res.returncode == 0 and "4 of 4 members answered" in res.stdout, res
            assert all(ring(files[f"n{i}"]) == [K1, K2] for i in range(4))
            res = await keys(nodes["n2"], "use", K2, "--json")
            assert res.returncode == 0 and json.loads(res.stdout)["primary"] == {K2: 4}, res
            res = await keys(nodes["n3"], "remove", K1)
            assert res.returncode == 2 and "n4 (failed)" in res.stderr and "--force" in res.stderr, res
            assert all(K1 in ring(files[f"n{i}"]) for i in range(5))

            nodes["n4"].start()  # its keyring file as it was: the old key only
            assert ring(files["n4"]) == [K1]
            await cluster.wait_converged(timeout=25)
            assert (await counters(nodes["n4"])).get("decrypt_failed", 0) == 0  # it understands everyone

            for op, want in (("install", f"{K2}  5/5"), ("use", "5 of 5 members answered")):
                res = await keys(nodes["n0"], op, K2)
                assert res.returncode == 0 and want in res.stdout, res
            res = await keys(nodes["n3"], "remove", K1, "--json")
            out = json.loads(res.stdout)
            assert res.returncode == 0 and out["keys"] == {K2: 5} and out["answered"] == 5, res
            assert all(ring(path) == [K2] for path in files.values())

            nodes["n4"].kill(signal.SIGKILL)  # a restart after the rotation: with the new key, from its file
            await nodes["n4"].wait_exit()
            nodes["n4"].start()
            await cluster.wait_converged(timeout=25)
            for node in cluster.nodes:
                c = await counters(node)
                assert c.get("replayed", 0) == 0, (node.name, c)
        finally:
            await cluster.stop_all()


async def test_keys_need_a_key_and_the_token() -> None:
    with tempfile.TemporaryDirectory(prefix="chatter-keys-") as tmp:
        cluster = LocalCluster(Path(tmp), ["--profile", "local"])
        try:
            plain = cluster.add("plain")
            sealed = cluster.add("sealed", join=[], args=["--encrypt", K1])
            await cluster.wait_for(lambda: _up(plain, sealed), timeout=20)
            res = await keys(plain, "list")
            assert res.returncode == 2 and "encryption is off" in res.stderr, res
            res = await run_cli("chatterd", "keys", "--http", sealed.addr, "--token-file", str(Path(tmp) / "none"))
            assert res.returncode == 2 and "token" in res.stderr, res
            r = await sealed.client.get(sealed.url + "/v1/keys")  # no token: the keys are never shown
            assert r.status_code == 401 and K1 not in r.text
            res = await keys(sealed, "install", "not-base64")
            assert res.returncode == 2 and "invalid key" in res.stderr, res
        finally:
            await cluster.stop_all()


async def _up(*nodes: LocalNode) -> bool:
    return all([await n.try_get("/v1/health") is not None for n in nodes])
