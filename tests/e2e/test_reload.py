"""SIGHUP on a real node: the config file's tags and event handlers change without a restart,
an option that needs a restart is named, and a bad file is one error line while the node keeps
running with what it had."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import FAILURE_TIMEOUT, spawn_chatterd, wait_until

from chatterd.testing import free_port

pytestmark = pytest.mark.e2e


def config_text(tags: str, handlers: list[str], fanout: int = 3) -> str:
    return f"tag = {{ {tags} }}\nevent_handler = {json.dumps(handlers)}\nfanout = {fanout}\n"


async def test_sighup_reloads_tags_and_handlers_and_survives_a_bad_file(tmp_path: Path) -> None:
    config = tmp_path / "chatterd.toml"
    config.write_text(config_text('dc = "east", rack = "r1"', []))
    out = tmp_path / "handled.jsonl"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("CHATTER_LOG", "RUST_LOG")}
    args = ("--name", "n1", "--config", str(config), "--tag", "team=infra")
    async with spawn_chatterd(port, tmp_path / "n1.log", env, args) as node:
        await node.wait_healthy()

        async def health() -> dict[str, Any]:
            import httpx

            async with httpx.AsyncClient(timeout=2.0) as client:
                return dict((await client.get(node.url + "/v1/health")).json())

        def events(name: str) -> list[dict[str, Any]]:
            return [line for line in node.log_lines() if line.get("event") == name]

        # --tag on the command line wins over the file's tag: the file's tags are not applied...
        assert (await health())["tags"] == {"team": "infra"}
        # ...so this test moves what a reload applies into the file alone: restart without --tag.
    args = ("--name", "n1", "--config", str(config))
    async with spawn_chatterd(port, tmp_path / "n1b.log", env, args) as node:
        await node.wait_healthy()
        assert (await health())["tags"] == {"dc": "east", "rack": "r1"}
        inc = (await health())["incarnation"]

        config.write_text(config_text('dc = "west"', [f"member-update=cat >> {out}"], fanout=4))
        os.kill(node.proc.pid, signal.SIGHUP)
        await wait_until(lambda: _has(events, "reloaded"), FAILURE_TIMEOUT, "the reloaded line")
        h = await health()
        assert h["tags"] == {"dc": "west"} and h["incarnation"] == inc + 1  # one change, one incarnation
        assert events("reloaded")[0]["changed"] == ["tags", "handlers"]
        assert events("reload_needs_restart")[0]["options"] == ["fanout"]

        # The new handler runs for the next event: a tags change fires member-update on this node.
        config.write_text(config_text('dc = "west", zone = "z9"', [f"member-update=cat >> {out}"], fanout=4))
        os.kill(node.proc.pid, signal.SIGHUP)
        await wait_until(lambda: _handled(out, 2), FAILURE_TIMEOUT, "the reloaded handler to run twice")
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["kind"] for r in rows] == ["member-update"] * 2  # the reload's own tags change too
        assert [r["payload"]["tags"] for r in rows] == [{"dc": "west"}, {"dc": "west", "zone": "z9"}]

        # A bad file: one error line, the node runs on with its tags.
        config.write_text('tag = { dc = "nowhere" }\nfanout = "many"\n')
        os.kill(node.proc.pid, signal.SIGHUP)
        await wait_until(lambda: _has(events, "reload_failed"), FAILURE_TIMEOUT, "the reload_failed line")
        failed = events("reload_failed")
        assert len(failed) == 1 and failed[0]["level"] == "error" and "fanout" in failed[0]["error"], failed
        assert node.proc.poll() is None
        assert (await health())["tags"] == {"dc": "west", "zone": "z9"}
        # Tags over the size limit are refused the same way.
        config.write_text(f'tag = {{ big = "{"x" * 600}" }}\n')
        os.kill(node.proc.pid, signal.SIGHUP)
        await wait_until(lambda: _count(events, "reload_failed", 2), FAILURE_TIMEOUT, "the second reload_failed")
        assert "512-byte limit" in events("reload_failed")[1]["error"]
        assert (await health())["tags"] == {"dc": "west", "zone": "z9"} and node.proc.poll() is None


async def _has(events: Any, name: str) -> bool:
    return bool(events(name))


async def _count(events: Any, name: str, n: int) -> bool:
    return len(events(name)) >= n


async def _handled(path: Path, n: int) -> bool:
    return path.exists() and len(path.read_text().splitlines()) >= n
