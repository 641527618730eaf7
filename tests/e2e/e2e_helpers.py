"""Helpers for the end-to-end tests: real chatterd / chatter-inject processes on 127.0.0.1.

Every process started here is stopped by PID: the cluster's nodes by chatterd.testing, the
CLI runs by trio.run_process (which kills its child if the test is cancelled or times out),
and the stand-alone daemons of :func:`spawn_chatterd` in a ``finally`` block.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from chatterd.testing import HOST, LocalNode

# Generous bounds: these tests assert outcomes, never timings.
CLI_TIMEOUT = 30.0  # a CLI run that has not finished by then is a hang
DELIVERY_TIMEOUT = 15.0  # a message to reach every node (takes well under a second)
FAILURE_TIMEOUT = 15.0  # a failure or leave to be seen everywhere (takes ~2.5 s)


@dataclass
class Completed:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"{self.argv!r} exited {self.returncode}\nstdout: {self.stdout!r}\nstderr: {self.stderr!r}"


async def run_cli(
    module: str,
    *args: str,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = CLI_TIMEOUT,
) -> Completed:
    """Run ``python -m <module> args...`` to completion; killed (by trio, by PID) on timeout."""
    argv = [sys.executable, "-m", module, *args]
    with trio.fail_after(timeout):
        proc = await trio.run_process(
            argv,
            stdin=stdin if stdin is not None else b"",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=None if env is None else dict(env),
        )
    return Completed(argv, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


async def inject(addr: str, message: Any = None, *args: str, stdin: bytes | None = None) -> Completed:
    """Run chatter-inject; ``message`` (a JSON text or a JSON-able value) goes on the command line."""
    argv = [addr]
    if message is not None:
        argv.append(message if isinstance(message, str) else json.dumps(message))
    return await run_cli("chatter_inject", *argv, *args, stdin=stdin)


async def inject_ok(node: LocalNode, message: Any = None, *, stdin: bytes | None = None) -> str:
    """Post a message to ``node`` with chatter-inject; check the acknowledgement; return the message id."""
    res = await inject(node.addr, message, stdin=stdin)
    assert res.returncode == 0, str(res)
    assert res.stderr == "", str(res)
    lines = res.stdout.splitlines()
    assert len(lines) == 1, str(res)
    mid, name = lines[0].split(" ")
    assert name == node.name, str(res)
    assert len(mid) == 32 and all(c in "0123456789abcdef" for c in mid), str(res)
    return mid


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``check`` until it is true; fail the test naming ``what`` after ``timeout`` seconds."""
    try:
        with trio.fail_after(timeout):
            while not await check():
                await trio.sleep(interval)
    except trio.TooSlowError:
        pytest.fail(f"timed out after {timeout} s waiting for: {what}")


async def delivered(node: LocalNode, mid: str) -> list[dict[str, Any]]:
    """The rows of ``node``'s /v1/events that deliver message ``mid``."""
    return [e for e in await node.events() if e["id"] == mid]


async def wait_delivered(nodes: list[LocalNode], mids: list[str], timeout: float = DELIVERY_TIMEOUT) -> None:
    async def check() -> bool:
        for n in nodes:
            ids = {e["id"] for e in await n.try_get("/v1/events") or []}
            if not set(mids) <= ids:
                return False
        return True

    await wait_until(check, timeout, f"messages {mids} delivered on {[n.name for n in nodes]}")


async def counters(node: LocalNode) -> dict[str, int]:
    health = await node.get("/v1/health")
    return dict(health["counters"])


async def member_view(node: LocalNode) -> dict[str, tuple[str, str, str, int]]:
    """What ``node`` believes about each member, without the fields that move with time."""
    return {m["name"]: (m["id"], m["addr"], m["state"], m["incarnation"]) for m in await node.get("/v1/members")}


def base_env(**overrides: str | None) -> dict[str, str]:
    """os.environ without CHATTER_LOG / RUST_LOG, then ``overrides`` (None removes a variable)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CHATTER_LOG", "RUST_LOG")}
    for k, v in overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def addr(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (non-JSON lines fail the test: they would be tracebacks)."""
        out = []
        for line in self.log_path.read_text().splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pytest.fail(f"non-JSON line in {self.log_path}: {line!r}")
        return out

    async def wait_healthy(self, timeout: float = 20.0) -> None:
        async with httpx.AsyncClient(timeout=2.0) as client:

            async def check() -> bool:
                assert self.proc.poll() is None, f"chatterd exited with {self.proc.returncode}"
                try:
                    r = await client.get(self.url + "/v1/health")
                except httpx.HTTPError:
                    return False
                return r.status_code == 200

            await wait_until(check, timeout, f"chatterd on {self.addr} to answer /v1/health")


@contextlib.asynccontextmanager
async def spawn_chatterd(
    port: int, log_path: Path, env: Mapping[str, str], args: tuple[str, ...] = ()
) -> AsyncIterator[Daemon]:
    """Start one chatterd directly (not through the harness); SIGKILL it by PID on the way out."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatterd", "--listen", f"{HOST}:{port}", "--log-format", "json", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
        )
        try:
            yield Daemon(proc, port, log_path)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                while proc.poll() is None:
                    await trio.sleep(0.02)
