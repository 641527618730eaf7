"""Takeover times when the application dies, with the role bound to it (chatterd.app, .leases).

python -m benchmarks.app_takeover --runs 5

Two nodes on 127.0.0.1, ``--profile local``, equal candidates for one role, each running a
tiny application with ``--run``. For each run, from the kill to the moment the other node's
``/v1/roles`` shows it holding the role (polled every 10 ms):

- ``app``: kill -9 of the holder's application alone (its chatterd withdraws at once);
- ``all``: kill -9 of the holder's chatterd and its application together (a host or container
  dying: the others must declare it dead first);
- ``lease``: a node leased with ``--lease-ttl 1`` and renewed every 0.33 s stops renewing:
  from its last renewal to the takeover.

Prints one line per run and the median / max of each; nothing is asserted (the e2e tests
assert outcomes, tests/e2e/test_app_roles.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

from chatterd.testing import LocalCluster, LocalNode

APP = """import os, sys, time
open(sys.argv[1] + "/" + os.environ["CHATTER_NODE"] + ".pid", "w").write(str(os.getpid()))
time.sleep(100000)
"""


async def holder(node: LocalNode, role: str = "leader") -> str | None:
    rows = await node.try_get("/v1/roles") or []
    return next((r["holder"] for r in rows if r["role"] == role), None)


async def until_holder(node: LocalNode, name: str, timeout: float = 30.0) -> float:
    """Seconds (monotonic clock) at which ``node`` shows ``name`` holding the role."""
    with trio.fail_after(timeout):
        while await holder(node) != name:
            await trio.sleep(0.01)
    return time.monotonic()


async def pid_of(d: Path, name: str) -> int:
    with trio.fail_after(20):
        while not (d / f"{name}.pid").exists() or not (d / f"{name}.pid").read_text():
            await trio.sleep(0.02)
    return int((d / f"{name}.pid").read_text())


async def run_kill(d: Path, mode: str) -> float:
    """One run of ``app`` or ``all``: the takeover time in seconds."""
    (d / "app.py").write_text(APP)
    for old in d.glob("*.pid"):
        old.unlink()
    run = ["--run", f"exec {sys.executable} {d / 'app.py'} {d}"]
    cluster = LocalCluster(d, ["--profile", "local", "--role", "leader:1", *run])
    try:
        cluster.add("a")
        cluster.add("b")
        await cluster.wait_converged()
        with trio.fail_after(20):
            while (first := await holder(cluster.node("a"))) is None:
                await trio.sleep(0.02)
        other = "a" if first == "b" else "b"
        app = await pid_of(d, first)
        t0 = time.monotonic()
        if mode == "all":
            cluster.node(first).kill(signal.SIGKILL)
        os.kill(app, signal.SIGKILL)
        return await until_holder(cluster.node(other), other) - t0
    finally:
        with trio.CancelScope(shield=True):
            await cluster.stop_all()
        for p in d.glob("*.pid"):
            try:
                os.kill(int(p.read_text()), signal.SIGKILL)
            except (OSError, ValueError):
                pass


async def run_lease(d: Path) -> float:
    """One run of ``lease``: from the last renewal to the takeover."""
    token = d / "token"
    token.write_text("bench-token\n")
    token.chmod(0o600)
    cluster = LocalCluster(d, ["--profile", "local"])
    try:
        cluster.add("a", args=["--role", "leader:0"])
        b = cluster.add("b", args=["--role", "leader:5", "--lease-ttl", "1", "--http-token-file", str(token)])
        await cluster.wait_converged()
        auth = {"Authorization": "Bearer bench-token"}
        async with httpx.AsyncClient(timeout=2.0) as client:
            last = 0.0
            with trio.fail_after(20):
                while await holder(b) != "b":
                    await client.post(b.url + "/v1/roles/leader/lease", headers=auth)
                    last = time.monotonic()
                    await trio.sleep(0.33)
            for _ in range(3):
                r = await client.post(b.url + "/v1/roles/leader/lease", headers=auth)
                last = time.monotonic()
                assert r.status_code == 200, r.text
                await trio.sleep(0.33)
        return await until_holder(cluster.node("a"), "a") - last
    finally:
        with trio.CancelScope(shield=True):
            await cluster.stop_all()


async def main(runs: int) -> None:
    results: dict[str, list[float]] = {"app": [], "all": [], "lease": []}
    with tempfile.TemporaryDirectory(prefix="chatter-app-") as tmp:
        for i in range(runs):
            for mode in results:
                d = Path(tmp) / f"{mode}-{i}"
                d.mkdir()
                took = await run_lease(d) if mode == "lease" else await run_kill(d, mode)
                results[mode].append(took)
                print(f"run {i + 1} {mode}: {took:.3f} s", flush=True)
    for mode, xs in results.items():
        print(f"{mode}: median {statistics.median(xs):.3f} s, max {max(xs):.3f} s over {len(xs)} runs")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    trio.run(main, ap.parse_args().runs)
