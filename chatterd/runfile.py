"""The node's runtime file: where a node that this user started on this host serves its HTTP
API, so that the operator commands find it without ``--http`` (chatterd.nodefind).

    $XDG_RUNTIME_DIR/chatter/node-HOST-PORT.json    (else /tmp/chatter-UID/: the directory of
                                                     the token files, chatterd.httpauth.runtime_dir)
    {"name": "n1", "http": "127.0.0.1:2428", "pid": 4242}

``http`` is an address a client on this host can connect to (an API bound to 0.0.0.0 is
reached at 127.0.0.1). The file is written atomically (mode 0600, in a directory of mode 0700
that must belong to this user) once the API listens, and removed at exit. A file whose pid no
longer runs (a node killed by SIGKILL) is skipped by the readers; so is anything that is not
a small regular file of that shape. Light on imports: the operator commands read it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from chatterd.atomicfile import replace_private
from chatterd.core import wire
from chatterd.httpauth import TokenError, runtime_dir

Addr = tuple[str, int]

PREFIX, SUFFIX = "node-", ".json"
MAX_FILE = 4096  # one short JSON object: anything bigger is not ours
MAX_FILES = 256  # files looked at in the directory: a flood of them cannot slow a command down
_WILDCARD = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


@dataclass(frozen=True, order=True)
class RunFile:
    """A running node, as its runtime file tells: ordered by address (the commands' choice)."""

    http: Addr
    name: str
    pid: int
    path: Path


def connectable(addr: Addr) -> Addr:
    """The address a local client uses for an API bound to ``addr`` (a wildcard: loopback)."""
    return (_WILDCARD.get(addr[0], addr[0]), addr[1])


def file_name(addr: Addr) -> str:
    host = re.sub(r"[^A-Za-z0-9.]", "_", addr[0])
    return f"{PREFIX}{host}-{addr[1]}{SUFFIX}"


def publish(name: str, bound: Addr, pid: int | None = None) -> Path:
    """Write this node's runtime file (raises OSError, TokenError: the caller logs it)."""
    addr = connectable(bound)
    path = runtime_dir(create=True) / file_name(addr)
    body = {"name": name, "http": wire.format_addr(addr), "pid": os.getpid() if pid is None else pid}
    replace_private(path, (json.dumps(body) + "\n").encode())
    return path


def remove(path: Path | None, pid: int | None = None) -> None:
    """At exit: remove the file if it is still ours (another node may have taken the address)."""
    if path is None:
        return
    found = read(path)
    if found is not None and found.pid == (os.getpid() if pid is None else pid):
        with contextlib.suppress(OSError):
            path.unlink()


def read(path: Path) -> RunFile | None:
    """The runtime file at ``path``, or None when it is missing or not one of ours."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = f.read(MAX_FILE + 1)
    if len(data) > MAX_FILE:
        return None
    try:
        body = json.loads(data)
        name, http, pid = body["name"], wire.parse_addr(body["http"]), body["pid"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(name, str) or not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 2**31:
        return None
    return RunFile(http, name, pid, path)


def pid_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone's process: the file's may still be running
    return True


def running(directory: Path | None = None) -> list[RunFile]:
    """The nodes of this user that run on this host, by address; [] when there is none (or
    the directory is not a private one of this user's)."""
    try:
        directory = runtime_dir() if directory is None else directory
        entries = sorted(os.listdir(directory))[: MAX_FILES * 4]
    except (OSError, TokenError):
        return []
    names = [e for e in entries if e.startswith(PREFIX) and e.endswith(SUFFIX)][:MAX_FILES]
    found = [f for e in names if (f := read(directory / e)) is not None and pid_runs(f.pid)]
    return sorted(found)


def where() -> str:
    """The directory the runtime files are in, for messages."""
    try:
        return str(runtime_dir())
    except TokenError as e:
        return f"(unusable: {e})"


def publish_bound(name: str, bound: list[str], fallback: Addr) -> Path | None:
    """At the API's start: the runtime file for the address the API listens on (``bound``:
    hypercorn's URLs, with the real port when it was 0). A failure is one warning, not fatal:
    the commands can still be pointed with --http."""
    import structlog

    addr = fallback
    if bound:
        with contextlib.suppress(ValueError):
            addr = wire.parse_addr(bound[0].removeprefix("http://").removeprefix("https://"))
    try:
        return publish(name, addr)
    except (OSError, TokenError) as e:
        structlog.get_logger("chatterd.runtime").warning("runtime_file_failed", error=str(e))
        return None
