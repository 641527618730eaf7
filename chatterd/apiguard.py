"""The gate in front of the HTTP API (an ASGI middleware): who may ask, and how much they may send.

- Any method but GET/HEAD needs ``Authorization: Bearer TOKEN`` (chatterd.httpauth), whatever
  the Content-Type: a cross-site form POST (text/plain, no header) gets 401 and changes
  nothing. The check runs before the route, so a new mutating route is covered too; routes
  that change something are also marked with :func:`mutating` (chatterd.api checks that
  every non-GET route is).
- The keyring (``/v1/keys``: it shows keys, and asks every member) needs the token always.
- On a loopback API reads are open, under a local Host (an IP address or localhost): a
  DNS-rebinding page (Host: evil.example) needs the token too.
- When the API listens beyond loopback, reads need the token too, except ``/v1/health``,
  ``/metrics`` and the dashboard's static shell (``/``, ``/static/``: no node data; the page
  takes the token from its URL fragment, ``#token=...``). A GET may carry the token as
  ``?access_token=`` (RFC 6750): an EventSource cannot set headers.
- A request body is read here, in chunks, counting: over HTTP_MAX_BODY it is 413 at once
  (nothing more is read or kept), and it must arrive within HTTP_BODY_TIMEOUT (408). The
  route then reads the body from memory.

Refusals are JSON, ``{"error": "..."}``, as every error of the API.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs

import trio

from chatterd.core.config import HTTP_BODY_TIMEOUT, HTTP_MAX_BODY
from chatterd.httpauth import HttpToken

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
F = TypeVar("F", bound=Callable[..., Any])

SAFE_METHODS = frozenset({"GET", "HEAD"})
ALWAYS_OPEN = frozenset({"/v1/health", "/metrics"})  # for load balancers and Prometheus
SHELL = ("/", "/static/")  # the dashboard's files: no node data in them
SECRET = "/v1/keys"  # and below it: the token for every method


def mutating(endpoint: F) -> F:
    """Mark a route that changes something: it needs the token (chatterd.api checks that every
    route accepting more than GET/HEAD carries this mark)."""
    endpoint.__chatter_mutating__ = True  # type: ignore[attr-defined]
    return endpoint


def is_mutating(endpoint: object) -> bool:
    return bool(getattr(endpoint, "__chatter_mutating__", False))


async def _reply(send: Send, status: int, message: str, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _local_host(host: str | None) -> bool:
    """Whether a Host header names this machine: an IP literal or localhost (any port)."""
    if host is None:
        return True  # HTTP/1.0 without Host: not a browser
    name = host.strip().lower()
    name = name[1 : name.index("]")] if name.startswith("[") and "]" in name else name.rpartition(":")[0] or name
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Guard:
    """The middleware; ``token`` is the node's, ``max_body`` / ``timeout`` the body bounds."""

    def __init__(
        self,
        app: ASGIApp,
        token: HttpToken,
        max_body: int = HTTP_MAX_BODY,
        timeout: float = HTTP_BODY_TIMEOUT,
        stats: dict[str, int] | None = None,
    ) -> None:
        self.app, self.token, self.max_body, self.timeout = app, token, max_body, timeout
        self.stats = stats if stats is not None else {}  # counters: the node's, to show them in /v1/health
        for key in ("http_unauthorized", "http_body_too_large", "http_body_timeout"):
            self.stats.setdefault(key, 0)

    def _needs_token(self, scope: Scope) -> bool:
        method, path = scope["method"], scope["path"]
        if method not in SAFE_METHODS or path == SECRET or path.startswith(SECRET + "/"):
            return True
        if path in ALWAYS_OPEN:
            return False
        if self.token.loopback:
            # Open reads, but only under a local name: a page of evil.example whose name was
            # re-pointed at 127.0.0.1 (DNS rebinding) sends Host: evil.example.
            return not _local_host(_header(scope, b"host"))
        return not (path == SHELL[0] or path.startswith(SHELL[1]))

    def _authorized(self, scope: Scope) -> bool:
        presented = _header(scope, b"authorization")
        if presented is None and scope["method"] in SAFE_METHODS:
            query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
            given = query.get("access_token")
            presented = f"Bearer {given[0]}" if given else None
        return self.token.check(presented)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if self._needs_token(scope) and not self._authorized(scope):
            self.stats["http_unauthorized"] += 1
            why = "this request needs the node's token: Authorization: Bearer TOKEN (see chatterd --help)"
            await _reply(send, 401, why, [(b"www-authenticate", b"Bearer")])
            return
        if method in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        body = await self._read_body(scope, receive, send)
        if body is None:
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None after answering 413 / 408 (or when the client went away)."""
        close = [(b"connection", b"close")]
        too_large = f"the request body is over {self.max_body} bytes"
        length = _header(scope, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_body:
            self.stats["http_body_too_large"] += 1
            await _reply(send, 413, too_large, close)
            return None
        chunks: list[bytes] = []
        size = 0
        with trio.move_on_after(self.timeout) as scope_:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return None
                chunk = bytes(msg.get("body", b""))
                size += len(chunk)
                if size > self.max_body:
                    self.stats["http_body_too_large"] += 1
                    await _reply(send, 413, too_large, close)
                    return None
                chunks.append(chunk)
                if not msg.get("more_body", False):
                    return b"".join(chunks)
        assert scope_.cancelled_caught
        self.stats["http_body_timeout"] += 1
        await _reply(send, 408, f"the request body did not arrive within {self.timeout:g} s", close)
        return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that gives the body read already, then what the client sends next."""
    given = False

    async def again() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again
