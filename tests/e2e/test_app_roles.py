"""A role held by the application, with real processes: --run (kill -9 of the application
alone moves the role; --restart on-failure brings the candidacy back; SIGTERM reaches the
application before the leave; SIGKILL of chatterd takes the application with it), leases
renewed through the API (--lease-ttl), and --exit-with-parent."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from e2e_helpers import FAILURE_TIMEOUT, wait_until

from chatterd.testing import HOST, ClusterFactory, LocalCluster, LocalNode, free_port

pytestmark = pytest.mark.e2e

TAKEOVER_BOUND = 10.0  # generous: takes well under a second (the application's end is news at once)

# The application: writes its pid (NAME.pid) and a line per start (NAME.starts); on SIGTERM it
# writes NAME.term and exits 0 after a moment; with a lease it renews every role of its node
# (POST /v1/roles/lease) every 0.2 s while the file NAME.renew exists.
APP = r"""
import json, os, signal, sys, time, urllib.request
d, name = sys.argv[1], os.environ["CHATTER_NODE"]
path = lambda ext: os.path.join(d, f"{name}.{ext}")
with open(path("starts"), "a") as f:  # before the pid file: a test that saw the pid finds this line
    f.write(json.dumps({"pid": os.getpid(), "http": os.environ.get("CHATTER_HTTP_ADDR")}) + "\n")
open(path("pid"), "w").write(str(os.getpid()))
def term(sig, frame):
    open(path("term"), "w").write(str(time.time()))
    time.sleep(0.3)
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
while True:
    if os.path.exists(path("renew")):
        req = urllib.request.Request(
            "http://" + os.environ["CHATTER_HTTP_ADDR"] + "/v1/roles/lease", method="POST", data=b"",
            headers={"Authorization": "Bearer " + os.environ["CHATTER_HTTP_TOKEN"]})
        try:
            urllib.request.urlopen(req, timeout=2).read()
        except OSError:
            pass
    time.sleep(0.2)
"""


def app_args(tmp_path: Path, *extra: str) -> list[str]:
    script = tmp_path / "app.py"
    script.write_text(APP)
    return ["--run", f"exec {sys.executable} {script} {tmp_path}", *extra]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@contextlib.contextmanager
def killing_apps(tmp_path: Path) -> Iterator[None]:
    """On the way out, SIGKILL by PID every application still running (chatterd's PDEATHSIG
    should have stopped them: this is for a failing test)."""
    try:
        yield
    finally:
        for pidfile in tmp_path.glob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                pid = int(pidfile.read_text())
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


async def app_pid(tmp_path: Path, name: str, other_than: int | None = None) -> int:
    path = tmp_path / f"{name}.pid"

    async def written() -> bool:
        return path.exists() and path.read_text().strip() not in ("", str(other_than))

    await wait_until(written, FAILURE_TIMEOUT, f"{name}'s application to start")
    return int(path.read_text())


async def holder(cluster: LocalCluster, observer: LocalNode, role: str = "leader") -> str | None:
    rows = await observer.try_get("/v1/roles") or []
    return next((r["holder"] for r in rows if r["role"] == role), None)


async def holds(cluster: LocalCluster, name: str, role: str = "leader") -> bool:
    """Every running node agrees that ``name`` holds ``role``."""
    return all([await holder(cluster, n, role) == name for n in cluster.running()])


async def two_nodes(clusters: ClusterFactory, tmp_path: Path, extra: list[str]) -> tuple[LocalCluster, str, str]:
    """a and b, equal candidates for leader, each with the application: (cluster, holder, other)."""
    cluster = await clusters(0, args=["--profile", "local", "--role", "leader:1"])
    cluster.add("a", args=app_args(tmp_path, *extra))
    cluster.add("b", args=app_args(tmp_path, *extra))
    await cluster.wait_converged()

    async def agreed() -> bool:
        return await holds(cluster, "a") or await holds(cluster, "b")

    await wait_until(agreed, FAILURE_TIMEOUT, "a or b holds leader")
    first = await holder(cluster, cluster.node("a"))
    assert first is not None
    return cluster, first, "a" if first == "b" else "b"


async def test_kill_9_of_the_application_moves_the_role_and_chatterd_exits_with_its_status(
    tmp_path: Path, chatter_cluster_factory: ClusterFactory
) -> None:
    with killing_apps(tmp_path):
        cluster, first, other = await two_nodes(chatter_cluster_factory, tmp_path, [])
        node = cluster.node(first)
        pid = await app_pid(tmp_path, first)  # its start line is written before its pid
        starts = [json.loads(line) for line in (tmp_path / f"{first}.starts").read_text().splitlines()]
        assert starts[0]["http"] == f"{HOST}:{node.port}"
        os.kill(pid, signal.SIGKILL)  # the application only
        with trio.fail_after(TAKEOVER_BOUND):
            while await holder(cluster, cluster.node(other)) != other:
                await trio.sleep(0.02)
        assert await node.wait_exit(FAILURE_TIMEOUT) == 128 + signal.SIGKILL
        await cluster.wait_state(first, "left", FAILURE_TIMEOUT)  # a graceful leave after the application's end


async def test_restart_on_failure_brings_the_application_and_the_candidacy_back(
    tmp_path: Path, chatter_cluster_factory: ClusterFactory
) -> None:
    with killing_apps(tmp_path):
        cluster, first, other = await two_nodes(chatter_cluster_factory, tmp_path, ["--restart", "on-failure"])
        pid = await app_pid(tmp_path, first)
        os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: holds(cluster, other), TAKEOVER_BOUND, "the other takes over from a dead application")
        second = await app_pid(tmp_path, first, other_than=pid)
        assert alive(second) and cluster.node(first).running()

        async def candidate_again() -> bool:
            m = (await cluster.node(other).members())[first]
            return m["tags"].get("role:leader") == "1" and "check" not in m["tags"]

        await wait_until(candidate_again, FAILURE_TIMEOUT, f"{first} is a candidate again")
        await trio.sleep(1.0)
        assert await holds(cluster, other)  # equal priorities: no fail-back


async def test_sigterm_reaches_the_application_before_the_leave_and_sigkill_takes_it_along(
    tmp_path: Path, chatter_cluster_factory: ClusterFactory
) -> None:
    with killing_apps(tmp_path):
        cluster, first, other = await two_nodes(chatter_cluster_factory, tmp_path, [])
        node = cluster.node(first)
        first_app = await app_pid(tmp_path, first)
        node.kill(signal.SIGTERM)
        assert await node.wait_exit(FAILURE_TIMEOUT) == 0
        assert (tmp_path / f"{first}.term").exists() and not alive(first_app)
        events = [json.loads(line)["event"] for line in node.log_path.read_text().splitlines()]
        assert events.index("app_stopping") < events.index("app_exited") < events.index("leaving")
        await cluster.wait_state(first, "left", FAILURE_TIMEOUT)
        await wait_until(lambda: holds(cluster, other), TAKEOVER_BOUND, "the other takes over from a leaving node")

        other_app = await app_pid(tmp_path, other)
        await trio.sleep(11)  # past trio's idle worker threads: the death signal is the fork thread's
        assert alive(other_app)
        cluster.node(other).kill(signal.SIGKILL)  # chatterd alone: PDEATHSIG ends its application

        async def gone() -> bool:
            return not alive(other_app)

        await wait_until(gone, FAILURE_TIMEOUT, "the application to die with its chatterd")
        assert (tmp_path / f"{other}.term").exists()  # by SIGTERM, the death signal


async def test_a_lease_offers_the_role_only_while_the_application_renews_it(
    tmp_path: Path, chatter_cluster_factory: ClusterFactory
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t0ken-for-the-lease-test\n")
    token_file.chmod(0o600)
    with killing_apps(tmp_path):
        cluster = await chatter_cluster_factory(0, args=["--profile", "local"])
        cluster.add("a", args=["--role", "leader:0"])
        lessee = ["--role", "leader:5", "--lease-ttl", "1", "--http-token-file", str(token_file)]
        b = cluster.add("b", args=[*lessee, *app_args(tmp_path)])
        await cluster.wait_converged()
        await wait_until(lambda: holds(cluster, "a"), FAILURE_TIMEOUT, "a holds leader (b has no lease)")
        await trio.sleep(1.0)
        assert await holds(cluster, "a")  # b, of higher priority, waits for its lease

        (tmp_path / "b.renew").write_text("")  # the application starts renewing
        await wait_until(lambda: holds(cluster, "b"), FAILURE_TIMEOUT, "b holds leader once leased")
        answer = await lease_post(b, "/v1/roles/leader/lease", token_file)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["role"] == "leader" and body["ttl"] == 1.0 and body["held_here"] is True
        assert 0.5 < body["expires_in"] <= 1.0 and body["epoch"] >= 2
        missing = await lease_post(b, "/v1/roles/nope/lease", token_file)
        assert missing.status_code == 404 and "not a candidate" in missing.json()["error"]
        assert (await lease_post(b, "/v1/roles/lease", None)).status_code == 401

        (tmp_path / "b.renew").unlink()  # the application stops renewing: it hangs, say
        await wait_until(lambda: holds(cluster, "a"), TAKEOVER_BOUND, "a takes over when b's lease runs out")
        row = next(r for r in await b.get("/v1/roles") if r["role"] == "leader")
        assert row["held_here"] is False and "b" not in row["candidates"]


async def lease_post(node: LocalNode, path: str, token_file: Path | None) -> httpx.Response:
    headers = {} if token_file is None else {"Authorization": f"Bearer {token_file.read_text().strip()}"}
    return await node.client.post(node.url + path, headers=headers)


async def test_exit_with_parent_leaves_when_the_parent_is_killed(
    tmp_path: Path, chatter_cluster_factory: ClusterFactory
) -> None:
    cluster = await chatter_cluster_factory(1, args=["--profile", "local"])
    seed = cluster.nodes[0]
    port = free_port()
    argv = [sys.executable, "-m", "chatterd", "--listen", f"{HOST}:{port}", "--name", "side", "--profile", "local"]
    argv += ["--join", seed.addr, "--exit-with-parent", "--log-format", "json"]
    log_path = tmp_path / "side.log"
    starter = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen({argv!r}, stdout=open({str(log_path)!r}, 'wb'), stderr=subprocess.STDOUT)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(1000)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, env=cluster.env)
    side_pid: int | None = None
    try:
        assert parent.stdout is not None
        with trio.fail_after(FAILURE_TIMEOUT):
            line = await trio.to_thread.run_sync(parent.stdout.readline)
        side_pid = int(line)
        await wait_until(lambda: side_alive(seed), FAILURE_TIMEOUT, "the sidecar joins")
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        await cluster.wait_state("side", "left", FAILURE_TIMEOUT)

        async def exited() -> bool:
            return not alive(side_pid)  # type: ignore[arg-type]

        await wait_until(exited, FAILURE_TIMEOUT, "the sidecar exits")
        events = [json.loads(line).get("event") for line in log_path.read_text().splitlines()]
        assert "leaving" in events and "stopped" in events
    finally:
        if parent.poll() is None:
            os.kill(parent.pid, signal.SIGKILL)
            parent.wait()
        if side_pid is not None and alive(side_pid):
            os.kill(side_pid, signal.SIGKILL)


async def side_alive(seed: LocalNode) -> bool:
    members: list[dict[str, Any]] = await seed.try_get("/v1/members") or []
    return any(m["name"] == "side" and m["state"] == "alive" for m in members)
