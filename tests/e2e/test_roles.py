"""Roles with real chatterd processes: election, failover on kill -9 and on SIGTERM, the
roles command and API, a failing --check giving the role away, role events for handlers."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import trio
from e2e_helpers import FAILURE_TIMEOUT, run_cli, wait_until

from chatterd.testing import ClusterFactory, LocalCluster, LocalNode

pytestmark = pytest.mark.e2e


async def roles_of(node: LocalNode) -> dict[str, dict[str, Any]]:
    rows = await node.try_get("/v1/roles")
    return {r["role"]: r for r in rows or []}


async def holder_seen_by_all(cluster: LocalCluster, role: str) -> str | None:
    """The holder every running node agrees on, or None."""
    seen = set()
    for n in cluster.running():
        r = (await roles_of(n)).get(role)
        seen.add(None if r is None else (r["holder"], r["epoch"]))
    if len(seen) == 1 and None not in seen:
        return next(iter(seen))[0]  # type: ignore[index]
    return None


async def start(clusters: ClusterFactory, prios: dict[str, int], extra: list[str] | None = None) -> LocalCluster:
    cluster = await clusters(0, args=["--profile", "local", *(extra or [])])
    for name, prio in prios.items():
        cluster.add(name, args=["--role", f"primary:{prio}"])
    await cluster.wait_converged()
    return cluster


async def test_kill_and_sigterm_move_the_role_with_growing_epochs(
    tmp_path: Path, chatter_cluster_factory: ClusterFactory
) -> None:
    log = tmp_path / "events.jsonl"
    handler = ["--event-handler", f"role-acquired,role-lost=cat >> {log}"]
    cluster = await start(chatter_cluster_factory, {"a": 1, "b": 3, "c": 2}, handler)

    async def agreed(name: str) -> bool:
        return await holder_seen_by_all(cluster, "primary") == name

    await wait_until(lambda: agreed("b"), FAILURE_TIMEOUT, "b holds primary")
    epoch_b = (await roles_of(cluster.node("a")))["primary"]["epoch"]
    cluster.node("b").kill(signal.SIGKILL)
    await wait_until(lambda: agreed("c"), FAILURE_TIMEOUT, "c takes over from killed b")
    row = (await roles_of(cluster.node("c")))["primary"]
    assert row["epoch"] > epoch_b and row["held_here"] is True
    assert (await cluster.node("c").get("/v1/health"))["roles_held"] == {"primary": row["epoch"]}
    cluster.node("c").kill(signal.SIGTERM)
    await wait_until(lambda: agreed("a"), FAILURE_TIMEOUT, "a takes over from c leaving")
    assert (await roles_of(cluster.node("a")))["primary"]["epoch"] > row["epoch"]

    out = await run_cli("chatterd", "roles", "--http", cluster.node("a").url.removeprefix("http://"))
    assert out.returncode == 0, out.stderr
    assert "primary" in out.stdout and "held here" in out.stdout

    async def handled() -> bool:
        return log.exists() and len(log.read_text().splitlines()) >= 4

    await wait_until(handled, FAILURE_TIMEOUT, "role events reach the handlers")
    events = [json.loads(line) for line in log.read_text().splitlines()]
    kinds = [(e["kind"], e["payload"]["holder"]) for e in events]
    assert ("role-acquired", "b") in kinds and ("role-acquired", "c") in kinds and ("role-acquired", "a") in kinds
    assert ("role-lost", "c") in kinds  # its graceful leave gave the role up
    epochs = [e["payload"]["epoch"] for e in events if e["kind"] == "role-acquired"]
    assert epochs == sorted(epochs) and len(set(epochs)) == len(epochs)


async def test_a_failing_check_gives_the_role_away(tmp_path: Path, chatter_cluster_factory: ClusterFactory) -> None:
    flag = tmp_path / "healthy"
    flag.write_text("yes")
    cluster = await chatter_cluster_factory(0, args=["--profile", "local"])
    cluster.add("a", args=["--role", "primary:1"])
    cluster.add("b", args=["--role", "primary:1", "--check", f"test -e {flag}", "--check-interval", "0.2"])
    await cluster.wait_converged()

    async def holder(name: str) -> bool:
        return await holder_seen_by_all(cluster, "primary") == name

    await wait_until(lambda: holder("b"), FAILURE_TIMEOUT, "b (highest name) holds primary")
    flag.unlink()
    await wait_until(lambda: holder("a"), FAILURE_TIMEOUT, "a takes over when b's check fails")
    health = await cluster.node("b").try_get("/v1/health")
    assert health is None or any("check failing" in r for r in health["reasons"])
    members = {m["name"]: m for m in await cluster.node("a").get("/v1/members")}
    assert members["b"]["tags"].get("check") == "failing"
    flag.write_text("yes")

    async def candidate_again() -> bool:
        ms = {m["name"]: m for m in await cluster.node("a").get("/v1/members")}
        return ms["b"]["tags"].get("role:primary") == "1"

    await wait_until(candidate_again, FAILURE_TIMEOUT, "b is a candidate again")
    await trio.sleep(1)
    assert await holder_seen_by_all(cluster, "primary") == "a"  # equal priority: no fail-back
