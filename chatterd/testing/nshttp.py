"""An httpx client whose connections start inside a network namespace (trio).

A test runs in the root namespace; a chatterd on a host of :mod:`chatterd.testing.hosts` serves
its API inside that host's namespace, at an address the root namespace has no route to. Rather
than wire the root namespace into the test network (an interface and a route there, shared by
every parallel run), each connection's socket is created inside the host's namespace
(:func:`chatterd.testing.netns.socket_in`) and then used from the test's trio loop as usual:

    async with namespace_client("chatter-hosts-123-0-h2") as client:
        r = await client.get("http://198.18.0.3:2428/v1/members", headers=...)

Responses are read whole (no streaming): enough for the JSON API, not for ``/v1/events/stream``.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
import trio

from chatterd.testing.netns import socket_in

# httpcore's errors, as httpx raises them (the first match wins: subclasses first)
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (Exception, httpx.TransportError),
)


def _limit(timeout: float | None) -> float:
    return float("inf") if timeout is None else timeout


class _Stream(httpcore.AsyncNetworkStream):
    """A connected trio socket stream, as httpcore reads and writes it."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            with trio.fail_after(_limit(timeout)):
                return await self._stream.receive_some(max_bytes)
        except trio.TooSlowError:
            raise httpcore.ReadTimeout("read timed out") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            raise httpcore.ReadError(str(e)) from e

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            with trio.fail_after(_limit(timeout)):
                await self._stream.send_all(buffer)
        except trio.TooSlowError:
            raise httpcore.WriteTimeout("write timed out") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            raise httpcore.WriteError(str(e)) from e

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("TLS is not supported in a namespace client")

    def get_extra_info(self, info: str) -> Any:
        return self._stream.socket if info == "socket" else None


class NamespaceBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend: TCP connections from inside network namespace ``netns``."""

    def __init__(self, netns: str) -> None:
        self.netns = netns

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        sock = trio.socket.from_stdlib_socket(socket_in(self.netns))
        try:
            with trio.fail_after(_limit(timeout)):
                await sock.connect((host, port))
        except trio.TooSlowError:
            sock.close()
            raise httpcore.ConnectTimeout(f"connect to {host}:{port} in {self.netns} timed out") from None
        except OSError as e:
            sock.close()
            raise httpcore.ConnectError(f"connect to {host}:{port} in {self.netns}: {e.strerror or e}") from e
        return _Stream(trio.SocketStream(sock))

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("no Unix sockets in a namespace client")

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


class NamespaceTransport(httpx.AsyncBaseTransport):
    """An httpx transport over :class:`NamespaceBackend` (a small pool of kept-alive connections)."""

    def __init__(self, netns: str, max_connections: int = 4) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            network_backend=NamespaceBackend(netns), max_connections=max_connections
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            r = await self._pool.request(
                request.method,
                str(request.url),
                headers=request.headers.raw,
                content=await request.aread(),
                extensions=request.extensions,
            )
        except Exception as e:
            raise next(ours for theirs, ours in _ERRORS if isinstance(e, theirs))(str(e), request=request) from e
        return httpx.Response(r.status, headers=r.headers, content=r.content, request=request)

    async def aclose(self) -> None:
        await self._pool.aclose()


def namespace_client(netns: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose every connection is made inside network namespace ``netns``."""
    return httpx.AsyncClient(transport=NamespaceTransport(netns), timeout=timeout, headers=headers)
