"""Event handlers on real chatterd processes: the right events, once each, with the right environment;
a handler that outlives --handler-timeout is killed, and the node keeps gossiping meanwhile."""

from __future__ import annotations

import json
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from e2e_helpers import DELIVERY_TIMEOUT, FAILURE_TIMEOUT, counters, inject_ok, wait_delivered, wait_until

from chatterd import handlers
from chatterd.testing import LocalNode, local_cluster

pytestmark = pytest.mark.e2e

HANDLER_TIMEOUT = 60.0  # handlers to catch up with the events (a loaded machine runs python slowly)
MEMBER_KINDS = set(handlers.MEMBER_KINDS)

# One file per run, written atomically: {"stdin": <the event row>, "env": {CHATTER_* but CHATTER_LOG}}.
RECORD = """\
import json, os, sys, uuid
out = sys.argv[1]
data = {"stdin": json.loads(sys.stdin.read()),
        "env": {k: v for k, v in os.environ.items() if k.startswith("CHATTER_") and k != "CHATTER_LOG"}}
tmp = os.path.join(out, "." + uuid.uuid4().hex)
with open(tmp, "w") as f:
    json.dump(data, f)
os.rename(tmp, tmp.replace("/.", "/", 1) + ".json")
"""


def runs(d: Path) -> list[dict[str, Any]]:
    """What a recording handler saw, in event order."""
    got = [json.loads(p.read_text()) for p in d.glob("*.json")]
    return sorted(got, key=lambda r: r["stdin"]["seq"])


def expected_env(node: LocalNode, row: dict[str, Any]) -> dict[str, str]:
    env = {"CHATTER_EVENT": row["kind"], "CHATTER_SELF_NAME": node.name, "CHATTER_SELF_ADDR": node.addr}
    if row["kind"] == "user":
        env["CHATTER_USER_EVENT"] = next(iter(row["payload"]))
    if row["kind"] in MEMBER_KINDS:
        env["CHATTER_MEMBER_NAME"] = row["origin"]
        env["CHATTER_MEMBER_ADDR"] = row["payload"]["addr"]
    return env


def log_events(node: LocalNode, event: str) -> list[dict[str, Any]]:
    lines = node.log_path.read_text().splitlines()
    return [e for e in (json.loads(line) for line in lines if line.startswith("{")) if e.get("event") == event]


async def test_handlers_see_their_events_once_with_env(tmp_path: Path) -> None:
    script = tmp_path / "record.py"
    script.write_text(RECORD)
    dirs: dict[str, dict[str, Path]] = {}

    def handler_args(name: str) -> list[str]:
        dirs[name] = {}
        argv = []
        for label, filt in [("failed", "member-failed="), ("deploy", "user:deploy="), ("all", "")]:
            d = tmp_path / "runs" / name / label
            d.mkdir(parents=True)
            dirs[name][label] = d
            cmd = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {shlex.quote(str(d))}"
            argv += ["--event-handler", filt + cmd]
        return argv

    async with local_cluster(0, log_dir=tmp_path, converge=False) as cluster:
        for name in ("n0", "n1", "n2"):
            cluster.add(name, args=handler_args(name))
        await cluster.wait_converged(timeout=30)
        n0, n1, victim = cluster.nodes

        victim.kill()
        assert await victim.wait_exit() == -signal.SIGKILL
        await cluster.wait_state("n2", "dead", timeout=FAILURE_TIMEOUT)
        deploy = await inject_ok(n0, {"deploy": {"v": 1}})
        other = await inject_ok(n1, {"other": {}})
        survivors = [n0, n1]
        await wait_delivered(survivors, [deploy, other])

        async def caught_up() -> bool:
            for n in survivors:
                seqs = {e["seq"] for e in await n.events()}
                if {r["stdin"]["seq"] for r in runs(dirs[n.name]["all"])} != seqs:
                    return False
            return True

        await wait_until(caught_up, HANDLER_TIMEOUT, "every event to reach the unfiltered handlers")
        await trio.sleep(1.0)  # a duplicate run, or a late one, would show by now

        for n in survivors:
            events = await n.events()
            by_seq = {e["seq"]: e for e in events}

            # Unfiltered: every event, once each, as /v1/events shows it, with the right env.
            everything = runs(dirs[n.name]["all"])
            assert [r["stdin"]["seq"] for r in everything] == sorted(by_seq), n.name
            for r in everything:
                assert r["stdin"] == by_seq[r["stdin"]["seq"]], n.name
                assert r["env"] == expected_env(n, r["stdin"]), (n.name, r)
            ids = [r["stdin"]["id"] for r in everything]
            assert ids.count(deploy) == 1 and ids.count(other) == 1, (n.name, ids)

            # member-failed: n2's failure, once, and nothing else.
            failed = runs(dirs[n.name]["failed"])
            assert len(failed) == 1, (n.name, failed)
            row = failed[0]["stdin"]
            assert row["kind"] == "member-failed" and row["origin"] == "n2", row
            assert row == by_seq[row["seq"]]
            assert failed[0]["env"] == {
                "CHATTER_EVENT": "member-failed",
                "CHATTER_SELF_NAME": n.name,
                "CHATTER_SELF_ADDR": n.addr,
                "CHATTER_MEMBER_NAME": "n2",
                "CHATTER_MEMBER_ADDR": victim.addr,
            }

            # user:deploy: the deploy event, once; not {"other": {}}.
            deploys = runs(dirs[n.name]["deploy"])
            assert len(deploys) == 1, (n.name, deploys)
            row = deploys[0]["stdin"]
            assert row["id"] == deploy and row["kind"] == "user" and row["payload"] == {"deploy": {"v": 1}}, row
            assert deploys[0]["env"] == {
                "CHATTER_EVENT": "user",
                "CHATTER_SELF_NAME": n.name,
                "CHATTER_SELF_ADDR": n.addr,
                "CHATTER_USER_EVENT": "deploy",
            }

            c = await counters(n)
            assert c["handler_runs"] == len(everything) + 2, (n.name, c)
            assert (c["handler_failures"], c["handler_timeouts"], c["handler_dropped"]) == (0, 0, 0), (n.name, c)
            assert len(log_events(n, "handler_done")) == c["handler_runs"], n.name


async def test_slow_handler_is_killed_and_gossip_goes_on(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # The shell stays (it waits for its child), so the timeout must kill the group, not just sh.
    slow = f"user:slow=sleep 600 & echo $! >> {shlex.quote(str(pids))}; wait"
    async with local_cluster(0, log_dir=tmp_path, converge=False) as cluster:
        n0 = cluster.add("n0", args=["--event-handler", slow, "--handler-timeout", "3"])
        cluster.add("n1")
        cluster.add("n2")
        await cluster.wait_converged(timeout=30)
        n1 = cluster.node("n1")

        # Two slow events: about 6 s of handlers timing out one after the other, three times
        # the heartbeat silence after which n0's monitors would suspect it if its loop stalled.
        await inject_ok(n0, {"slow": {}})
        await inject_ok(n1, {"slow": {"again": True}})
        await wait_until(lambda: _started(pids, 1), DELIVERY_TIMEOUT, "the first slow handler to start")
        mid = await inject_ok(n1, {"DebugMessage": {"text": "while n0 runs a handler"}})
        await wait_delivered(cluster.nodes, [mid])

        async def timed_out_twice() -> bool:
            health = await n0.try_get("/v1/health")
            return health is not None and health["counters"]["handler_timeouts"] == 2

        await wait_until(timed_out_twice, HANDLER_TIMEOUT, "two handler timeouts on n0")
        c = await counters(n0)
        assert (c["handler_runs"], c["handler_failures"], c["handler_dropped"]) == (2, 2, 0), c

        failed = log_events(n0, "handler_failed")
        assert len(failed) == 2, failed
        assert all(e["timed_out"] and e["signal"] == "SIGKILL" and e["timeout_s"] == 3.0 for e in failed), failed

        # Everything it started is gone: the group was killed, not only the shell.
        for pid in (int(p) for p in pids.read_text().split()):
            await wait_until(lambda pid=pid: _gone(pid), DELIVERY_TIMEOUT, f"handler child {pid} to die")

        # Heartbeats went on: nobody declared anyone failed, everyone is alive everywhere.
        await cluster.wait_converged(timeout=FAILURE_TIMEOUT)
        for n in cluster.nodes:
            kinds = [e["kind"] for e in await n.events()]
            assert "member-failed" not in kinds, (n.name, kinds)


async def _started(pids: Path, n: int) -> bool:
    return pids.exists() and len(pids.read_text().split()) >= n


async def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")  # a zombie nobody reaped is dead too
