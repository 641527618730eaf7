"""The bearer token of a node's HTTP API: where it lives, how it is made, read and checked.

A mutating request (``PUT /v1/tags``, ``POST /v1/leave``, any method but GET/HEAD) needs
``Authorization: Bearer TOKEN``; so does every read when the API listens beyond loopback
(chatterd.api). The token is ``--http-token-file PATH`` when given (the operator's file), else
``DATA_DIR/http-token`` with ``--data-dir`` (made the first time, then the same across
restarts), else a new one at each start (``secrets.token_urlsafe(32)``). Every file is written
atomically with mode 0600. A token the node made is also written, once the API listens, to the
per-user runtime dir, ``$XDG_RUNTIME_DIR/chatter/`` or ``/tmp/chatter-UID/`` (mode 0700,
refused unless it is a real directory of this user), as ``http-token-HOST-PORT`` after the HTTP
address so local nodes do not collide, and removed at exit.

The operator commands (chatterd.ctl) find it from the ``--http`` address the same way
(:func:`find_token`), so the user who runs the node needs no flag. Light on imports: the
commands start fast.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from chatterd.atomicfile import replace_private
from chatterd.core import wire

Addr = tuple[str, int]

ENV_TOKEN = "CHATTER_HTTP_TOKEN"  # the token itself, for the operator commands
MAX_TOKEN_FILE = 4096  # a token file is one short line: anything longer is not one
TOKEN_BYTES = 32
DATA_DIR_FILE = "http-token"  # in --data-dir: the node's token, kept across restarts


class TokenError(OSError):
    """A token file that cannot be used: one line saying why."""


def is_loopback(host: str) -> bool:
    """Whether an HTTP bind address only accepts local connections (0.0.0.0 does not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def runtime_dir(create: bool = False) -> Path:
    """The per-user directory of auto tokens; with ``create``, made (0700) if missing.
    Raises TokenError when it exists but is not a private directory of this user."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(xdg) / "chatter" if xdg else Path(tempfile.gettempdir()) / f"chatter-{os.getuid()}"
    if create:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700, parents=bool(xdg))
    try:
        st = path.lstat()
    except FileNotFoundError:
        return path
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise TokenError(f"{path} is not a private directory of this user (owner, mode 0700, no symlink)")
    return path


def file_name(addr: Addr) -> str:
    host = re.sub(r"[^A-Za-z0-9.]", "_", addr[0])
    return f"http-token-{host}-{addr[1]}"


def read_token(path: Path) -> str:
    """The token in a file: a regular file (no symlink, FIFO or device), one short line."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise TokenError(f"cannot read the token file {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TokenError(f"the token file {path} is not a regular file")
        data = f.read(MAX_TOKEN_FILE + 1)
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        token = ""
    if not token or len(data) > MAX_TOKEN_FILE or any(c.isspace() for c in token):
        raise TokenError(f"the token file {path} does not hold one token (one line of printable text)")
    return token


def write_token(path: Path, token: str) -> None:
    """Atomically: a new file, mode 0600 from its creation, renamed over ``path``."""
    replace_private(path, (token + "\n").encode())


@dataclass
class HttpToken:
    """The node's token. ``path``: the file it writes once the API is bound and removes at exit
    (None: none, e.g. with --http-token-file); ``kept``: the file it came from and stays in."""

    token: str
    path: Path | None = None
    loopback: bool = True  # the API listens on loopback only: reads are open
    kept: Path | None = None

    @classmethod
    def for_node(cls, http: Addr, token_file: Path | None, data_dir: Path | None) -> HttpToken:
        """From --http-token-file; else the one kept in --data-dir (made there the first time:
        it stays the same across restarts); else a new one. A token the node made is also
        written to the runtime dir under the HTTP address, for the operator commands.
        Raises TokenError."""
        loopback = is_loopback(http[0])
        if token_file is not None:
            return cls(read_token(token_file), None, loopback, kept=token_file)
        if data_dir is None:
            return cls(secrets.token_urlsafe(TOKEN_BYTES), runtime_dir(create=True) / file_name(http), loopback)
        kept = data_dir / DATA_DIR_FILE
        try:
            token = read_token(kept)
        except TokenError:
            token = secrets.token_urlsafe(TOKEN_BYTES)
            data_dir.mkdir(parents=True, exist_ok=True)
            write_token(kept, token)
        try:
            path: Path | None = runtime_dir(create=True) / file_name(http)
        except TokenError:
            path = None  # found through --data-dir only
        return cls(token, path, loopback, kept=kept)

    @classmethod
    def unknown(cls) -> HttpToken:
        """A token nobody knows, never written: every guarded request is refused."""
        return cls(secrets.token_urlsafe(TOKEN_BYTES))

    def check(self, presented: str | None) -> bool:
        """Whether an Authorization header value carries this token (constant-time compare)."""
        if presented is None:
            return False
        scheme, _, value = presented.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.strip().encode(), self.token.encode())

    def publish(self, bound: Sequence[str] = ()) -> None:
        """Write an owned token once the API listens (``bound``: hypercorn's URLs, for the
        real port when it was 0)."""
        if self.path is None:
            return
        if bound and self.path.name.endswith("-0"):
            with contextlib.suppress(ValueError):
                self.path = self.path.with_name(file_name(wire.parse_addr(bound[0].removeprefix("http://"))))
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_token(self.path, self.token)

    def remove(self) -> None:
        """At exit: remove the runtime-dir file if it still holds this token (``kept`` stays)."""
        if self.path is None:
            return
        with contextlib.suppress(TokenError, OSError):
            if read_token(self.path) == self.token:
                self.path.unlink()


def candidates(addr: Addr, data_dir: Path | None = None) -> list[Path]:
    """Where a node serving ``addr`` keeps its auto token: its data dir (when told), the runtime
    dir; for a loopback address also the file of a node bound to 0.0.0.0 on that port."""
    names = [file_name(addr)]
    if is_loopback(addr[0]):
        names += [file_name(("0.0.0.0", addr[1])), file_name(("::", addr[1]))]
    found = [data_dir / DATA_DIR_FILE] if data_dir is not None else []
    with contextlib.suppress(TokenError):
        found += [runtime_dir() / n for n in names]
    return found


def find_token(addr: Addr, token_file: Path | None = None, data_dir: Path | None = None) -> str | None:
    """The token for the node at ``addr``: ``token_file``, else $CHATTER_HTTP_TOKEN, else the
    node's auto token file. None when there is none (a read-only command needs none).
    Raises TokenError for a token file given but unusable."""
    if token_file is not None:
        return read_token(token_file)
    env = os.environ.get(ENV_TOKEN, "").strip()
    if env:
        return env
    for path in candidates(addr, data_dir):
        with contextlib.suppress(TokenError):
            return read_token(path)
    return None
