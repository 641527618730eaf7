"""A chatterd sidecar for the example apps: each app process starts its own ``chatterd`` as a
child, talks to it over its HTTP API (``/v1/roles``, ``/v1/events``, ``/v1/members``,
``/v1/tags``) and posts gossip messages to it with the inject datagram (what
``chatter-inject`` sends). Only the standard library and ``chatterd.core.wire`` are used.

    node = Sidecar("master", port, join=["127.0.0.1:7001"], roles={"sender": 2})
    node.start()
    try:
        node.wait_ready()
        node.inject({"count": {"n": 1}})
        for event in node.poll_events(): ...
    finally:
        node.stop()          # SIGTERM: a graceful leave (its roles move at once)

The child runs in the app's process group, so killing the group (``kill -9 -PGID``, what a
machine crash looks like) takes the app and its chatterd down together. It is started with
``--exit-with-parent``: when only the app dies (kill -9 of its PID, a segfault, the OOM
killer), its chatterd leaves gracefully and exits instead of living on as an orphan that
keeps the app's roles (README, "Binding a role to the application").
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # a fresh clone works without installing the package
    sys.path.insert(0, str(REPO))

from chatter_inject.client import Rejected, inject  # noqa: E402
from chatterd.httpauth import find_token  # noqa: E402
from chatterd.testing import HOST, free_port  # noqa: E402, F401  (free_port: for the example apps)


def python_env() -> dict[str, str]:
    """The environment for child Python processes: the repository importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def http_json(
    url: str, body: Any = None, method: str | None = None, timeout: float = 1.0, token: str | None = None
) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    if token is not None:  # PUT/POST need the node's API token (chatterd.httpauth)
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"null")
    except http.client.HTTPException as e:  # a peer that died mid-answer (IncompleteRead): as a refused one
        raise ConnectionError(f"{url}: {e!r}") from e


class Sidecar:
    def __init__(
        self,
        name: str,
        port: int,
        join: Iterable[str] = (),
        roles: Mapping[str, int] | None = None,
        tags: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        exit_with_parent: bool = True,
    ) -> None:
        self.name = name
        self.port = port
        self.join = list(join)
        self.roles = dict(roles or {})
        self.tags = dict(tags or {})
        self.log_path = log_path
        self.exit_with_parent = exit_with_parent  # the roles live only as long as this process
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._since = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    @property
    def addr(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        argv = [sys.executable, "-m", "chatterd", "--listen", self.addr, "--name", self.name, "--profile", "local"]
        argv += ["--log-format", "json"]
        if self.exit_with_parent:
            argv.append("--exit-with-parent")
        for role, prio in self.roles.items():
            argv += ["--role", f"{role}:{prio}"]
        for k, v in self.tags.items():
            argv += ["--tag", f"{k}={v}"]
        for j in self.join:
            argv += ["--join", j]
        out: IO[bytes] | int = subprocess.DEVNULL
        if self.log_path is not None:
            self._log = out = open(self.log_path, "ab")  # closed in stop()
        self.proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=python_env()
        )

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"chatterd {self.name} exited with status {self.proc.returncode}")
            try:
                http_json(self.url + "/v1/health")
                return
            except (OSError, ValueError):
                time.sleep(0.05)
        raise TimeoutError(f"chatterd {self.name} not answering on {self.url}")

    def stop(self, timeout: float = 5.0) -> None:
        """Graceful leave (SIGTERM), SIGKILL if it does not exit in time. By PID."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        self._sock.close()

    def get(self, path: str, timeout: float = 1.0) -> Any:
        return http_json(self.url + path, timeout=timeout)

    def roles_now(self) -> dict[str, dict[str, Any]]:
        return {r["role"]: r for r in self.get("/v1/roles")}

    def members(self) -> dict[str, dict[str, Any]]:
        return {m["name"]: m for m in self.get("/v1/members")}

    def set_tags(self, tags: Mapping[str, str], delete: Iterable[str] = ()) -> None:
        """PUT /v1/tags with the token the child wrote (same user, same runtime dir)."""
        body = {"set": dict(tags), "delete": list(delete)}
        http_json(self.url + "/v1/tags", body, method="PUT", token=find_token((HOST, self.port)))

    def poll_events(self) -> list[dict[str, Any]]:
        """The events since the last call (the API keeps the last 2000)."""
        rows: list[dict[str, Any]] = self.get(f"/v1/events?since={self._since}")
        if rows:
            self._since = max(r["seq"] for r in rows)
        return rows

    def inject(self, payload: Any, timeout: float = 3.0, retry: float = 0.1) -> str:
        """Post a user message; returns its id once the node acknowledged it (UDP: retried)."""
        try:
            mid, _node = inject((HOST, self.port), payload, timeout=timeout, retry=retry, sock=self._sock)
        except Rejected as e:
            raise RuntimeError(f"message rejected by {self.name}: {e}") from None
        except TimeoutError:
            raise TimeoutError(f"no acknowledgement from {self.name} for the message") from None
        return mid


class App:
    """An example app run as a child in its own session (process group, with its chatterd)."""

    def __init__(self, name: str, argv: list[str], out: Callable[[str], None]) -> None:
        self.name = name
        self.argv = argv
        self.out = out
        self.proc: subprocess.Popen[str] | None = None
        self._interrupted = False
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self._interrupted = False
        self.proc = subprocess.Popen(
            [sys.executable, "-u", *self.argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=python_env(),
            start_new_session=True,  # its own process group: the app and its chatterd
        )
        self._reader = threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _pump(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self.out(line.rstrip("\n"))

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def interrupt(self) -> None:
        """Ctrl-C (SIGINT to the app only: it stops its chatterd itself, a graceful leave)."""
        if self.running() and not self._interrupted:
            assert self.proc is not None
            self._interrupted = True
            os.kill(self.proc.pid, signal.SIGINT)

    def kill_app(self) -> None:
        """kill -9 of the app's PID alone (a segfault, the OOM killer): its chatterd is not
        signalled and must notice by itself (``--exit-with-parent``)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def group_alive(self) -> bool:
        """Whether any process of the app's process group (its chatterd, say) still runs."""
        if self.proc is None:
            return False
        self.proc.poll()  # reap the app if it has exited: a zombie still counts in its group
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # a process of that group exists (not ours: cannot happen here)
            return True
        return True

    def crash(self) -> None:
        """kill -9 of the app and its chatterd together (its process group)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 8.0) -> None:
        if self.proc is None:
            return
        self.interrupt()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.crash()  # did not stop in time: the whole group, by PGID
        deadline = time.monotonic() + timeout
        while self.group_alive() and time.monotonic() < deadline:  # e.g. a chatterd still leaving
            time.sleep(0.05)
        if self.group_alive():  # left behind by the app (its PID killed alone): by PGID too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self._reader is not None:
            self._reader.join(2)
