"""The HTTP API locked down, with real processes: the operator commands work with the token the
node made, nothing else mutates (no token, a wrong one, a cross-site text/plain POST); beyond
loopback reads need it too; a 100 MB upload gets 413 without growing the node or stalling its
heartbeats."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from browser_helpers import MISSING, chromium_paths, headless_chromium
from e2e_helpers import Completed, base_env, run_cli, spawn_chatterd, wait_until

from chatterd.testing import HOST, free_port, local_cluster

pytestmark = pytest.mark.e2e

MB = 1024 * 1024
ROWS_JS = "return [...document.querySelectorAll('#members tbody tr')].map(r => r.dataset.name)"


def private_env(tmp_path: Path) -> dict[str, str]:
    """A runtime dir of the test's own: the token files the nodes make land there."""
    xdg = tmp_path / "run"
    xdg.mkdir(mode=0o700, exist_ok=True)
    return base_env(XDG_RUNTIME_DIR=str(xdg), CHATTER_HTTP_TOKEN=None)


async def ctl(env: dict[str, str], *args: str) -> Completed:
    return await run_cli("chatterd", *args, env=env)


def exists(path: Path) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return path.exists()

    return check


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_ctl_uses_the_auto_token_and_nothing_else_mutates(tmp_path: Path) -> None:
    env = private_env(tmp_path)
    token_file = Path(env["XDG_RUNTIME_DIR"]) / "chatter"
    async with local_cluster(1, log_dir=tmp_path, env=env) as cluster, httpx.AsyncClient(timeout=5) as client:
        (n0,) = cluster.nodes
        token_file = token_file / f"http-token-{HOST}-{n0.port}"
        await wait_until(exists(token_file), 10, "the token file")
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()

        res = await ctl(env, "tags", "set", "a=1", "--http", n0.addr)
        assert res.returncode == 0 and "tags updated" in res.stdout, str(res)
        before = (await n0.get("/v1/health"))["incarnation"]

        body = '{"set": {"pwned": "1"}}'
        for headers in (
            {"Content-Type": "text/plain"},  # what a cross-site form can send
            {"Content-Type": "application/json"},
            {"Content-Type": "application/json", "Authorization": "Bearer wrong"},
            {"Content-Type": "application/json", "Authorization": f"Bearer {token}x"},
        ):
            for method in ("PUT", "POST"):
                r = await client.request(method, n0.url + "/v1/tags", content=body, headers=headers)
                assert r.status_code == 401 and set(r.json()) == {"error"}, (headers, r.text)
            r = await client.post(n0.url + "/v1/leave", headers=headers)
            assert r.status_code == 401, r.text
        h = await n0.get("/v1/health")
        assert h["tags"] == {"a": "1"} and h["incarnation"] == before and h["counters"]["http_unauthorized"] == 12
        assert (await client.get(n0.url + "/v1/members")).status_code == 200  # loopback: reads open
        assert (await client.get(n0.url + "/")).status_code == 200  # the dashboard

        wrong = await ctl(env | {"CHATTER_HTTP_TOKEN": "nope"}, "tags", "set", "b=2", "--http", n0.addr)
        assert wrong.returncode == 2 and "the token given was refused" in wrong.stderr, str(wrong)
        assert (await n0.get("/v1/health"))["tags"] == {"a": "1"}

        res = await ctl(env, "leave", "--http", n0.addr)
        assert res.returncode == 0 and "left the cluster" in res.stdout, str(res)
        assert await n0.wait_exit(10) == 0
        assert not token_file.exists()  # the node removed the file it made


async def test_beyond_loopback_reads_need_the_token(tmp_path: Path) -> None:
    env = private_env(tmp_path)
    port = free_port()
    args = ("--name", "wide", "--http", f"0.0.0.0:{port}")
    async with spawn_chatterd(port, tmp_path / "wide.log", env, args), httpx.AsyncClient(timeout=5) as client:
        url = f"http://{HOST}:{port}"
        token_file = Path(env["XDG_RUNTIME_DIR"]) / "chatter" / f"http-token-0.0.0.0-{port}"
        await wait_until(exists(token_file), 15, "the token file")
        token = token_file.read_text().strip()
        assert (await client.get(url + "/v1/health")).status_code == 200
        assert (await client.get(url + "/metrics")).status_code == 200
        for path in ("/v1/members", "/v1/roles", "/v1/events", "/v1/events/stream"):
            r = await client.get(url + path)
            assert r.status_code == 401 and "error" in r.json(), (path, r.text)
        r = await client.get(url + "/v1/members", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and [m["name"] for m in r.json()] == ["wide"]
        # The operator commands find the file of a node bound to 0.0.0.0 from 127.0.0.1.
        res = await ctl(env, "members", "--http", f"{HOST}:{port}", "--json")
        assert res.returncode == 0 and '"wide"' in res.stdout, str(res)
        res = await ctl(env | {"XDG_RUNTIME_DIR": str(tmp_path)}, "members", "--http", f"{HOST}:{port}")
        assert res.returncode == 2 and "no token found" in res.stderr, str(res)


async def test_a_100_mb_body_is_refused_without_growing_the_node_or_stalling_it(tmp_path: Path) -> None:
    env = private_env(tmp_path)
    async with local_cluster(2, log_dir=tmp_path, env=env) as cluster:
        n0, n1 = cluster.nodes
        assert n0.pid is not None
        token = (Path(env["XDG_RUNTIME_DIR"]) / "chatter" / f"http-token-{HOST}-{n0.port}").read_text().strip()
        await trio.sleep(1.0)  # the API's imports are done: the RSS is settled
        rss_before = rss_kib(n0.pid)
        # As an attacker would: chunked (no Content-Length to refuse it by), pushed regardless of
        # any answer, until the node closes the connection or 100 MB went out.
        stream = await trio.open_tcp_stream(HOST, n0.port)
        head = (
            f"PUT /v1/tags HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"40000\r\n" + b" " * 0x40000 + b"\r\n"  # 256 KiB chunks
        sent = 0
        answer = b""
        start = trio.current_time()
        with trio.move_on_after(30):
            try:
                await stream.send_all(head.encode())
                while sent < 100 * MB:
                    await stream.send_all(chunk)
                    sent += len(chunk)
            except trio.BrokenResourceError:
                pass  # the node closed the connection: refused
            with trio.move_on_after(2):
                with contextlib.suppress(trio.BrokenResourceError):
                    answer = await stream.receive_some(4096)
        took = trio.current_time() - start
        await stream.aclose()
        status = int(answer.split()[1]) if answer.startswith(b"HTTP/1.1 ") else None
        rss_after = rss_kib(n0.pid)
        print(f"100 MB upload: {status}, {sent / MB:.1f} MB sent, {took:.2f} s, RSS {rss_before} -> {rss_after} KiB")
        assert status in (413, None), status
        assert sent < 10 * MB  # the node closed the connection: it did not read the rest
        assert rss_after - rss_before < 8 * 1024, (rss_before, rss_after)  # KiB: not the 100 MB
        assert took < 20, took

        # Its heartbeats kept going: its peer never suspected it.
        for observer, other in ((n1, "n0"), (n0, "n1")):
            rows = [e for e in await observer.events() if e["kind"].startswith("member-")]
            bad = [e for e in rows if e["payload"]["name"] == other and e["payload"]["state"] in ("suspect", "dead")]
            assert bad == [], bad
            assert (await cluster.states(observer))[other] == "alive"
        h = await n0.get("/v1/health")
        assert h["counters"]["http_body_too_large"] >= 1 and h["counters"].get("starved", 0) == 0, h["counters"]
        assert os.path.exists(f"/proc/{n0.pid}")


@pytest.mark.skipif(chromium_paths() is None, reason=MISSING)
async def test_dashboard_beyond_loopback_takes_the_token_from_its_fragment(tmp_path: Path) -> None:
    env = private_env(tmp_path)
    port = free_port()
    args = ("--name", "wide", "--http", f"0.0.0.0:{port}")
    async with spawn_chatterd(port, tmp_path / "wide.log", env, args):
        url = f"http://{HOST}:{port}/"
        token_file = Path(env["XDG_RUNTIME_DIR"]) / "chatter" / f"http-token-0.0.0.0-{port}"
        await wait_until(exists(token_file), 15, "the token file")
        token = token_file.read_text().strip()
        with headless_chromium() as browser:

            async def script(js: str) -> Any:
                return await trio.to_thread.run_sync(lambda: browser.execute_script(js))

            await trio.to_thread.run_sync(browser.get, url)

            async def says_token() -> bool:
                return "token" in await script("return document.getElementById('reasons').textContent")

            await wait_until(says_token, 30, "the page to say that it needs the token")
            await trio.sleep(3.5)  # the event stream, refused too, is retried meanwhile (after 1 s, then 2 s)
            assert await says_token(), "the retries of the stream must not hide why the page shows nothing"
            await trio.to_thread.run_sync(browser.get, "about:blank")
            await trio.to_thread.run_sync(browser.get, f"{url}#token={token}")

            async def shows_the_node() -> bool:
                rows = await script(ROWS_JS)
                return bool(rows == ["wide"] and await script("return stream !== null && stream.readyState === 1"))

            await wait_until(shows_the_node, 30, "the page to show the node, its event stream open")


async def test_a_given_token_file_is_used_and_a_bad_one_is_one_line_at_start(tmp_path: Path) -> None:
    env = private_env(tmp_path)
    port = free_port()
    missing = tmp_path / "missing"
    res = await run_cli("chatterd", "--listen", f"{HOST}:{port}", "--http-token-file", str(missing), env=env)
    assert res.returncode == 2 and res.stdout == "", str(res)
    want = f"chatterd: error: --http-token-file: cannot read the token file {missing}: No such file or directory\n"
    assert res.stderr == want, str(res)

    given = tmp_path / "token"
    given.write_text("operator-chosen-token\n")
    given.chmod(0o600)
    async with spawn_chatterd(port, tmp_path / "n.log", env, ("--name", "n", "--http-token-file", str(given))):
        await wait_until(lambda: _answers(port), 15, "the API")
        res = await ctl(env, "tags", "set", "a=1", "--http", f"{HOST}:{port}")
        assert res.returncode == 2 and "no token found" in res.stderr, str(res)  # not published anywhere
        res = await ctl(env, "tags", "set", "a=1", "--http", f"{HOST}:{port}", "--token-file", str(given))
        assert res.returncode == 0 and "tags updated" in res.stdout, str(res)
        assert not (Path(env["XDG_RUNTIME_DIR"]) / "chatter" / f"http-token-{HOST}-{port}").exists()
    assert given.read_text() == "operator-chosen-token\n"


async def _answers(port: int) -> bool:
    async with httpx.AsyncClient(timeout=1) as client:
        try:
            return (await client.get(f"http://{HOST}:{port}/v1/health")).status_code in (200, 503)
        except httpx.HTTPError:
            return False
