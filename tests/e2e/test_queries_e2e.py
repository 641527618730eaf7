"""`chatterd query` and `chatterd reachability` on real chatterd processes: query:NAME handlers
answer with their stdout, filters pick the members, responses and acks stream as JSON lines;
a node stopped with SIGSTOP shows as not answering the reachability query."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import run_cli

from chatterd.testing import LocalNode, local_cluster

pytestmark = pytest.mark.e2e

# The handler: who answers, what it was asked, and its environment.
HANDLER = 'query:who=printf "%s got %s from %s" "$CHATTER_SELF_NAME" "$(cat)" "$CHATTER_QUERY_ORIGIN"'
FAILING = "query:fail=echo partial; echo broken >&2; exit 3"
BIG = "query:big=head -c 2000 /dev/zero | tr '\\0' x"


def handler_args(role: str) -> list[str]:
    return ["--tag", f"role={role}", "--event-handler", HANDLER, "--event-handler", FAILING, "--event-handler", BIG]


async def query(node: LocalNode, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    res = await run_cli("chatterd", "query", *args, "--json", "--http", node.addr)
    return res.returncode, [json.loads(line) for line in res.stdout.splitlines() if line.strip()], res.stderr


def rows(lines: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {r["node"]: r for r in lines if r["type"] == kind}


async def test_query_handlers_answer_and_filters_pick_the_members(tmp_path: Path) -> None:
    async with local_cluster(0, log_dir=tmp_path, converge=False) as cluster:
        n0 = cluster.add("n0", args=handler_args("web"))
        cluster.add("n1", args=handler_args("web"))
        cluster.add("n2", args=handler_args("db"))
        await cluster.wait_converged(timeout=30)

        status, lines, err = await query(n0, "who", "hello", "--timeout", "5")
        assert status == 0, err
        assert lines[0]["type"] == "query" and lines[0]["asked"] == ["n0", "n1", "n2"]
        assert set(rows(lines, "ack")) == {"n0", "n1", "n2"}
        answers = {n: r["payload"] for n, r in rows(lines, "response").items()}
        assert answers == {n: f"{n} got hello from n0" for n in ("n0", "n1", "n2")}
        summary = lines[-1]
        assert (summary["type"], summary["asked"], summary["acked"], summary["answered"], summary["timed_out"]) == (
            "summary",
            3,
            3,
            3,
            0,
        )

        status, lines, _ = await query(
            n0, "who", "x", "--tag", "role=^db$", "--no-ack", "--relay-factor", "2", "--timeout", "5"
        )
        assert status == 0 and rows(lines, "ack") == {} and set(rows(lines, "response")) == {"n2"}
        status, lines, _ = await query(n0, "who", "--node", "n1", "--timeout", "3")
        assert set(rows(lines, "response")) == {"n1"} and lines[-1]["asked"] == 1

        status, lines, _ = await query(n0, "fail", "--node", "n1", "--timeout", "3")
        r = rows(lines, "response")["n1"]
        assert r["payload"] == "partial\n" and r["error"] == "exit status 3: broken"
        status, lines, _ = await query(n0, "big", "--node", "n2", "--timeout", "3")
        r = rows(lines, "response")["n2"]
        assert r["payload"] == "" and "over the response limit" in r["error"]
        # No handler for the name: every member acks, none answers.
        status, lines, _ = await query(n0, "nobody", "--timeout", "2")
        assert set(rows(lines, "ack")) == {"n0", "n1", "n2"} and lines[-1]["answered"] == 0
        assert lines[-1]["no_response"] == ["n0", "n1", "n2"]

        # For people: the acks and responses, then the summary.
        res = await run_cli("chatterd", "query", "who", "hi", "--http", n0.addr, "--timeout", "3")
        assert res.returncode == 0, res
        assert "response  n1" in res.stdout and "n1 got hi from n0" in res.stdout
        assert res.stdout.splitlines()[-1] == "asked 3, acked 3, answered 3, timed out 0"

        # Refused before anything is asked: one line, exit status 2.
        for args, words in [
            (["who", "x" * 1025], "over the 1024-byte limit"),
            (["_reach"], "invalid query name"),
            (["who", "--tag", "role=("], "not a regular expression"),
            (["who", "--relay-factor", "6"], "must be 0 to 5"),
            (["who", "--timeout", "61"], "at most 60"),
        ]:
            res = await run_cli("chatterd", "query", *args, "--http", n0.addr)
            assert res.returncode == 2 and words in res.stderr and len(res.stderr.splitlines()) == 1, res


async def test_reachability_names_a_stopped_member(tmp_path: Path) -> None:
    async with local_cluster(3, log_dir=tmp_path) as cluster:
        n0, _, n2 = cluster.nodes
        res = await run_cli("chatterd", "reachability", "--http", n0.addr, "--timeout", "5")
        assert res.returncode == 0, res
        assert res.stdout.splitlines()[-1] == "3 of 3 members answered, 0 did not"
        assert n2.proc is not None
        os.kill(n2.proc.pid, signal.SIGSTOP)
        try:
            res = await run_cli("chatterd", "reachability", "--http", n0.addr, "--timeout", "1", "--json")
        finally:
            os.kill(n2.proc.pid, signal.SIGCONT)
        assert res.returncode == 1, res
        lines = [json.loads(line) for line in res.stdout.splitlines()]
        summary = lines[-1]
        assert summary["silent"] == ["n2"] and summary["acked"] == 2 and summary["asked"] == 3
        assert {r["node"] for r in lines if r["type"] == "ack"} == {"n0", "n1"}
        assert all(r["rtt_ms"] >= 0 for r in lines if r["type"] == "ack")
