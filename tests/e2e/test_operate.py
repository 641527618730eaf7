"""Operating real chatterd processes like Serf: the operator commands (members, devices,
events, leave, tags) against a running cluster, tags on the command line and through the
API, and --data-dir: a restarted node comes back as itself without --join."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from e2e_helpers import (
    CLI_TIMEOUT,
    DELIVERY_TIMEOUT,
    FAILURE_TIMEOUT,
    Completed,
    base_env,
    inject_ok,
    run_cli,
    spawn_chatterd,
    wait_until,
)

from chatterd.httpauth import find_token
from chatterd.testing import HOST, LocalCluster, LocalNode, free_port, local_cluster

pytestmark = pytest.mark.e2e

DEVICE_ADDED = {
    "DeviceGossip": {
        "DeviceAdded": {"origin": "541b10e7-d13a-45e8-8567-7d450ce86603", "name": "gateway", "description": "router"}
    }
}


async def chatterd(*args: str, env: dict[str, str] | None = None) -> Completed:
    return await run_cli("chatterd", *args, env=env)


async def ok(*args: str) -> str:
    res = await chatterd(*args)
    assert res.returncode == 0 and res.stderr == "", str(res)
    return res.stdout


def one_line_error(res: Completed, code: int) -> str:
    assert res.returncode == code, str(res)
    assert res.stdout == "", str(res)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("chatterd"), str(res)
    assert "Traceback" not in res.stderr, str(res)
    return lines[0]


def parse_table(text: str) -> list[dict[str, str]]:
    """Rows of an aligned table, cut at the header's column starts (the last column may hold spaces)."""
    header, *lines = text.splitlines()
    names = header.split("  ")
    names = [n.strip() for n in names if n.strip()]
    starts = [header.index(n) for n in names]
    rows = []
    for line in lines:
        cells = [line[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]
        for s in starts[1:]:
            assert line[s - 2 : s].strip() == "", f"column not aligned at {s}: {line!r}"
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


async def member_updates(node: LocalNode, about: str) -> list[dict[str, Any]]:
    return [e for e in await node.events() if e["kind"] == "member-update" and e["origin"] == about]


async def tags_everywhere(cluster: LocalCluster, name: str, want: dict[str, str]) -> bool:
    for n in cluster.running():
        ms = await n.try_get("/v1/members")
        if not ms or next(m for m in ms if m["name"] == name)["tags"] != want:
            return False
    return True


async def test_members_and_tags(tmp_path: Path) -> None:
    async with local_cluster(0, log_dir=tmp_path, converge=False) as cluster:
        a = cluster.add("a", args=["--tag", "role=db", "--tag", "dc=east"])
        b = cluster.add("b")
        c = cluster.add("c", args=["--tag", "role=web"])
        await cluster.wait_converged()

        # The table: every member, aligned, with its tags.
        rows = parse_table(await ok("members", "--http", a.addr))
        assert [r["NAME"] for r in rows] == ["a", "b", "c"]
        assert [r["STATE"] for r in rows] == ["alive"] * 3
        assert [r["ADDR"] for r in rows] == [a.addr, b.addr, c.addr]
        assert [r["TAGS"] for r in rows] == ["dc=east,role=db", "", "role=web"]
        assert all(r["INCARNATION"].isdigit() for r in rows)

        # --json: the API's rows; filters by state and tags.
        by_json = json.loads(await ok("members", "--json", "--http", b.addr))
        want_tags = {"a": {"role": "db", "dc": "east"}, "b": {}, "c": {"role": "web"}}
        assert {m["name"]: m["tags"] for m in by_json} == want_tags
        only_db = json.loads(await ok("members", "--tag", "role=db", "--json", "--http", c.addr))
        assert [m["name"] for m in only_db] == ["a"]
        rows = parse_table(await ok("members", "--status", "alive", "--tag", "role=web", "--http", a.addr))
        assert [r["NAME"] for r in rows] == ["c"]
        assert parse_table(await ok("members", "--status", "dead,left", "--http", a.addr)) == []

        # tags set: a higher incarnation, seen everywhere, one member-update per node.
        before = (await b.members())["b"]["incarnation"]
        out = await ok("tags", "set", "zone=z1", "tier=gold", "--http", b.addr)
        match = re.fullmatch(r"b: tags updated \(incarnation (\d+)\): tier=gold,zone=z1\n", out)
        assert match, out
        inc = int(match[1])
        assert inc > before
        want = {"zone": "z1", "tier": "gold"}
        await wait_until(lambda: tags_everywhere(cluster, "b", want), DELIVERY_TIMEOUT, f"b's tags {want} everywhere")
        await trio.sleep(0.5)  # a second, duplicate member-update would show by now
        for n in cluster.nodes:
            updates = await member_updates(n, "b")
            assert len(updates) == 1, f"{n.name}: {updates}"
            assert updates[0]["payload"]["tags"] == want and updates[0]["payload"]["incarnation"] == inc
        assert parse_table(await ok("tags", "--http", b.addr)) == [
            {"KEY": "tier", "VALUE": "gold"},
            {"KEY": "zone", "VALUE": "z1"},
        ]
        only_gold = json.loads(await ok("members", "--tag", "tier=gold", "--json", "--http", a.addr))
        assert [m["name"] for m in only_gold] == ["b"]

        # The same tags again change nothing; delete does.
        out = await ok("tags", "set", "zone=z1", "--http", b.addr)
        assert out.startswith("b: tags unchanged (incarnation "), out
        result = json.loads(await ok("tags", "delete", "zone", "tier", "--json", "--http", b.addr))
        assert result["incarnation"] > inc
        assert result == {"name": "b", "tags": {}, "incarnation": result["incarnation"], "changed": True}
        await wait_until(lambda: tags_everywhere(cluster, "b", {}), DELIVERY_TIMEOUT, "b's tags deleted everywhere")

        # Over the limit: one line, exit 2, nothing changed. Checked by the command itself ...
        line = one_line_error(await chatterd("tags", "set", "k=" + "v" * 600, "--http", b.addr), 2)
        assert "over the 512-byte limit" in line, line
        # ... and, for the tags as a whole, by the node (the API answers 400).
        await ok("tags", "set", "k1=" + "v" * 300, "--http", b.addr)
        line = one_line_error(await chatterd("tags", "set", "k2=" + "v" * 300, "--http", b.addr), 2)
        assert "over the 512-byte limit" in line, line
        assert (await b.members())["b"]["tags"] == {"k1": "v" * 300}


async def test_devices_events_follow_and_leave(tmp_path: Path) -> None:
    async with local_cluster(3, log_dir=tmp_path) as cluster:
        n0, n1, n2 = cluster.nodes

        # devices: empty, then the gateway once its gossip arrived.
        assert parse_table(await ok("devices", "--http", n0.addr)) == []
        await inject_ok(n1, DEVICE_ADDED)

        async def has_gateway() -> bool:
            return bool(await n0.try_get("/v1/devices"))

        await wait_until(has_gateway, DELIVERY_TIMEOUT, "the gateway in n0's devices")
        [row] = parse_table(await ok("devices", "--http", n0.addr))
        assert row == {
            "ORIGIN": "541b10e7-d13a-45e8-8567-7d450ce86603",
            "NAME": "gateway",
            "DESCRIPTION": "router",
            "METRICS": "{}",
        }
        assert json.loads(await ok("devices", "--json", "--http", n0.addr)) == await n0.get("/v1/devices")

        # events: what /v1/events holds, as lines and as JSON lines.
        lines = (await ok("events", "--http", n0.addr)).splitlines()
        assert lines[0].split() == ["SEQ", "TIME", "KIND", "ORIGIN", "DETAIL"]
        kinds = {(line.split()[2], line.split()[3]) for line in lines[1:]}
        assert {("member-join", "n1"), ("member-join", "n2"), ("device", "n1")} <= kinds
        as_json = [json.loads(line) for line in (await ok("events", "--json", "--http", n0.addr)).splitlines()]
        assert as_json == await n0.events()

        # events --follow prints what happens after it started; it ends, with one error line,
        # when its node leaves.
        argv = [sys.executable, "-m", "chatterd", "events", "--follow", "--json", "--http", n2.addr]
        follow = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert follow.stdout is not None and follow.stderr is not None
            seen: list[dict[str, Any]] = []
            buf = b""

            async def read_until(pred: Any) -> None:
                nonlocal buf
                with trio.fail_after(CLI_TIMEOUT):
                    while not any(pred(e) for e in seen):
                        chunk = await follow.stdout.receive_some(65536)  # type: ignore[union-attr]
                        assert chunk, f"events --follow ended early: {seen}"
                        buf += chunk
                        *done, buf = buf.split(b"\n")
                        seen.extend(json.loads(line) for line in done if line)

            await read_until(lambda e: e["kind"] == "member-join" and e["origin"] == "n1")  # the backlog
            await ok("tags", "set", "later=yes", "--http", n0.addr)
            await read_until(lambda e: e["kind"] == "member-update" and e["origin"] == "n0")
            assert [e["seq"] for e in seen] == sorted({e["seq"] for e in seen}), "each event once, in order"

            # leave: the node announces it, exits 0, and everyone else sees it left.
            out = await ok("leave", "--http", n2.addr)
            assert out == "n2 left the cluster and stopped\n"
            assert await n2.wait_exit() == 0, f"see {n2.log_path}"
            await cluster.wait_state("n2", "left", timeout=FAILURE_TIMEOUT)
            with trio.fail_after(CLI_TIMEOUT):
                code = await follow.wait()
            err = (await follow.stderr.receive_some(65536)).decode()
            assert code == 1, err
            assert err == f"chatterd: error: no chatter node at http://{n2.addr} (connection refused)\n"
        finally:
            if follow.returncode is None:
                follow.kill()  # by PID
                with trio.CancelScope(shield=True):
                    await follow.wait()


async def test_no_node_and_bad_daemon_tags(tmp_path: Path) -> None:
    port = free_port()
    for args, env in [
        (["members", "--http", f"{HOST}:{port}"], None),
        (["events", "--follow"], base_env(CHATTER_HTTP_ADDR=f"{HOST}:{port}")),
        (["leave", "--http", f"{HOST}:{port}"], None),
    ]:
        line = one_line_error(await chatterd(*args, env=env), 1)
        # Where the address came from, and how to point the command elsewhere (chatterd.nodefind).
        source = "the address in $CHATTER_HTTP_ADDR" if env else "the address given by --http"
        assert line.startswith(
            f"chatterd: error: no chatter node at http://{HOST}:{port} (connection refused): {source}"
        )
        assert line.endswith("point the command at a node with --http ADDR or CHATTER_HTTP_ADDR=ADDR"), line

    listen = ["--listen", f"{HOST}:{free_port()}"]
    for args, mentions in [
        (["--tag", "role"], "expected KEY=VALUE"),
        (["--tag", "=db"], "expected KEY=VALUE"),
        (["--tag", "a=" + "v" * 300, "--tag", "b=" + "v" * 300], "over the 512-byte limit"),
        (["--tag", "a=" + "v" * 400, "--max-datagram", "600"], "too big for 600-byte datagrams"),
    ]:
        line = one_line_error(await chatterd(*listen, *args), 2)
        assert mentions in line, line


async def test_api_tags_and_filters_reject_bad_requests(tmp_path: Path) -> None:
    async with local_cluster(1, log_dir=tmp_path) as cluster, httpx.AsyncClient(timeout=5) as client:
        (n0,) = cluster.nodes
        url = n0.url
        client.headers["Authorization"] = f"Bearer {find_token((HOST, n0.port))}"  # the file n0 made
        bad = [b"not json", b"[]", b'{"set": {"a": 1}}', b'{"delete": "a"}', b'{"other": {}}', b'{"set":{"":"x"}}']
        for body in bad:
            r = await client.put(url + "/v1/tags", content=body)
            assert r.status_code == 400 and set(r.json()) == {"error"}, (body, r.text)
        r = await client.post(url + "/v1/tags", json={"set": {"big": "v" * 600}})
        assert r.status_code == 400 and "512-byte limit" in r.json()["error"]
        r = await client.post(url + "/v1/tags", json={"set": {"a": "1", "b": "2"}, "delete": ["b"]})
        assert r.status_code == 200 and r.json()["tags"] == {"a": "1", "b": "2"}  # set wins over delete
        for query in ["status=up", "tag=novalue"]:
            r = await client.get(url + "/v1/members?" + query)
            assert r.status_code == 400 and "error" in r.json(), r.text
        assert (await client.get(url + "/v1/leave")).status_code == 405
        assert (await client.get(url + "/v1/health")).json()["tags"] == {"a": "1", "b": "2"}


def without_join(args: list[str]) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--join":
            skip = True
        else:
            out.append(a)
    return out


@pytest.mark.parametrize(
    ("sig", "rejoin"),
    [(signal.SIGTERM, True), (signal.SIGKILL, False)],
    ids=["graceful-rejoin", "crash"],
)
async def test_data_dir_restart_keeps_identity_and_rejoins_without_join(tmp_path: Path, sig: int, rejoin: bool) -> None:
    data = tmp_path / "c-data"
    async with local_cluster(0, log_dir=tmp_path, converge=False) as cluster:
        a, b = cluster.add("a"), cluster.add("b")
        c = cluster.add("c", join=[b], args=["--data-dir", str(data)])
        await cluster.wait_converged()
        first = (await a.members())["c"]
        await ok("tags", "set", "role=cache", "--http", c.addr)
        saved = data / "node.json"

        async def peers_saved() -> bool:
            try:
                snap = json.loads(saved.read_text())
            except (OSError, ValueError):
                return False
            return sorted(snap["peers"]) == sorted([a.addr, b.addr]) and snap["tags"] == {"role": "cache"}

        if sig == signal.SIGKILL:  # no chance to save at exit: the periodic save must have run
            await wait_until(peers_saved, 20, "c's peers in its node.json")
        c.kill(sig)
        await c.wait_exit()
        await cluster.wait_state("c", "left" if sig == signal.SIGTERM else "dead", timeout=FAILURE_TIMEOUT)
        snap = json.loads(saved.read_text())
        assert snap["name"] == "c" and snap["id"] == first["id"]
        assert snap["incarnation"] > first["incarnation"]  # the tag change raised it
        assert snap.get("left", False) == (sig == signal.SIGTERM)  # a graceful leave is remembered
        assert await peers_saved()

        c.args = without_join(c.args) + (["--rejoin"] if rejoin else [])
        assert "--join" not in c.args
        c.start()
        await cluster.wait_converged(timeout=FAILURE_TIMEOUT)
        for n in (a, b, c):
            m = (await n.members())["c"]
            assert m["state"] == "alive" and m["id"] == first["id"], n.name
            assert m["tags"] == {"role": "cache"}, n.name  # the saved tags: no --tag this time
            assert m["incarnation"] > snap["incarnation"], n.name
        log = [json.loads(line) for line in c.log_path.read_text().splitlines() if line.startswith("{")]
        loaded = [line for line in log if line["event"] == "state_loaded"]
        assert len(loaded) == 1 and loaded[0]["id"] == first["id"], loaded
        # The second life joined through the saved peers (after a crash the others would also
        # find it by retrying the dead member; after a leave, only --rejoin brings it back).
        started = [line for line in log if line["event"] == "started"]
        assert len(started) == 2 and started[0]["seeds"] == [b.addr], started
        assert sorted(started[1]["seeds"]) == sorted([a.addr, b.addr]), started


async def test_after_a_graceful_leave_no_rejoin_without_rejoin(tmp_path: Path) -> None:
    """Serf's rule: a node that left gracefully (SIGTERM here, chatterd leave alike) and comes
    back without --rejoin does not join its saved peers: it starts alone (a --join would still
    be joined); with --rejoin it does (the test above)."""
    data = tmp_path / "c-data"
    async with local_cluster(0, log_dir=tmp_path, converge=False) as cluster:
        a = cluster.add("a")
        c = cluster.add("c", join=[a], args=["--data-dir", str(data)])
        await cluster.wait_converged()
        await wait_until(lambda: _saved_peer(data, a.addr), 20, "c's peer in its node.json")
        c.kill(signal.SIGTERM)
        assert await c.wait_exit() == 0
        await cluster.wait_state("c", "left", timeout=FAILURE_TIMEOUT)
        assert json.loads((data / "node.json").read_text())["left"] is True
        c.args = without_join(c.args)
        c.start()
        await wait_until(lambda: _answers(c), FAILURE_TIMEOUT, "c's API")
        await trio.sleep(3)  # a rejoin through the saved peer would be done by now
        assert set(await c.members()) == {"c"}
        assert (await a.members())["c"]["state"] == "left"
        log = [json.loads(line) for line in c.log_path.read_text().splitlines() if line.startswith("{")]
        assert [line["peers"] for line in log if line["event"] == "state_left"] == [1], log
        assert [line["seeds"] for line in log if line["event"] == "started"][-1] == []
        # Alone, it kept the saved peer: stopped again and started with --rejoin, it rejoins.
        c.kill(signal.SIGTERM)
        assert await c.wait_exit() == 0
        assert json.loads((data / "node.json").read_text())["peers"] == [a.addr]
        c.args = [*c.args, "--rejoin"]
        c.start()
        await wait_until(lambda: _is_member(a, "c", "alive"), FAILURE_TIMEOUT, "c alive at a after --rejoin")
        res = await chatterd("--listen", f"{HOST}:{free_port()}", "--rejoin")  # --rejoin alone: what would it rejoin?
        assert (
            one_line_error(res, 2)
            == "chatterd: error: --rejoin needs --data-dir DIR (the peers it rejoins are saved there)"
        )


async def _saved_peer(data: Path, peer: str) -> bool:
    try:
        return peer in json.loads((data / "node.json").read_text())["peers"]
    except (OSError, ValueError, KeyError):
        return False


async def _is_member(node: LocalNode, name: str, state: str) -> bool:
    members = await node.try_get("/v1/members") or []
    return any(m["name"] == name and m["state"] == state for m in members)


async def _answers(node: LocalNode) -> bool:
    return await node.try_get("/v1/health") is not None


@pytest.mark.parametrize(
    ("content", "event", "level"),
    [
        (None, "state_fresh", "info"),
        (b"{not json", "state_unusable", "warning"),
        (b'{"name":"someone-else","id":"x","incarnation":1}', "state_unusable", "warning"),
        ("dir", "state_unusable", "warning"),  # node.json is a directory: unreadable
    ],
    ids=["missing", "corrupt", "other-node", "unreadable"],
)
async def test_unusable_data_dir_is_one_log_line_and_a_fresh_start(
    tmp_path: Path, content: bytes | str | None, event: str, level: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    if content == "dir":
        (data / "node.json").mkdir()
    elif isinstance(content, bytes):
        (data / "node.json").write_bytes(content)
    port = free_port()
    args = ("--name", "solo", "--data-dir", str(data))
    async with spawn_chatterd(port, tmp_path / "d.log", base_env(CHATTER_LOG="info"), args) as d:
        await d.wait_healthy()
        lines = d.log_lines()
        about_state = [line for line in lines if line["event"].startswith("state_")]
        assert [(line["event"], line["level"]) for line in about_state[:1]] == [(event, level)], about_state
        assert all(line["level"] != "error" for line in lines), lines
        async with httpx.AsyncClient(timeout=5) as client:
            health = (await client.get(d.url + "/v1/health")).json()
        if content != "dir":  # a fresh identity, saved for next time
            snap = json.loads((data / "node.json").read_text())
            assert snap["name"] == "solo" and snap["id"] == health["id"]
            assert snap["incarnation"] == health["incarnation"]
        else:  # cannot be saved either: said at each attempt (at most every few seconds), and it runs on
            assert about_state[1:], about_state
            assert all(line["event"] == "state_save_failed" for line in about_state[1:]), about_state
