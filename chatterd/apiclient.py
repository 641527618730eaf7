"""A client of a node's HTTP API for the operator commands: JSON requests where every failure
becomes a one-line :class:`CtlError` with its exit status, and the server-sent event stream
(GET /v1/events/stream) read line by line. httpx's synchronous client, never through a proxy.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from chatterd.cliargs import EXIT_USAGE
from chatterd.core import wire
from chatterd.core.config import CTL_REQUEST_TIMEOUT

EXIT_FAILED = 1

REQUEST_TIMEOUT = CTL_REQUEST_TIMEOUT
STREAM_PATH = "/v1/events/stream"
# The node writes a comment on an idle stream every 15 s (chatterd.api.KEEPALIVE_S): silence
# for three of those means the connection is dead, and `events --follow` reconnects.
STREAM_READ_TIMEOUT = 45.0
# Reconnecting after a broken stream: at once, then after a pause that doubles up to
# RECONNECT_MAX; after RECONNECT_TRIES failures in a row (a node that accepts connections but
# does not answer) it gives up. A refused connection ends it at once: the node is gone.
RECONNECT_FIRST, RECONNECT_MAX, RECONNECT_TRIES = 0.1, 1.0, 10


class CtlError(Exception):
    """A failure to report in one line, with the exit status to use."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


class NodeUnreachable(CtlError):
    """Nothing accepts connections at the node's address: it stopped, or never ran."""


# ---------------------------------------------------------------------- the API client


def _reason(e: BaseException) -> str:
    """Why a request failed, in a few lowercase words: from the OSError behind it if any."""
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, TimeoutError):
            return "timed out"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        cause = cause.__cause__ or cause.__context__
    text = str(e).rstrip(".") or type(e).__name__
    return text[:1].lower() + text[1:]


Row = dict[str, Any]


class Client:
    """JSON requests to one node's API; every failure becomes a CtlError.

    ``transport`` replaces the network (httpx.MockTransport in tests)."""

    def __init__(
        self,
        addr: tuple[str, int],
        timeout: float = REQUEST_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        token: str | None = None,
    ) -> None:
        self.base = f"http://{wire.format_addr(addr)}"
        self.timeout = timeout
        self.has_token = token is not None
        self.answered = False  # the node answered once: a later NodeUnreachable means it went away
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        # No proxies (trust_env=False): the node is usually on loopback, and http_proxy must not
        # reroute it.
        self._http = httpx.Client(
            base_url=self.base, timeout=timeout, trust_env=False, transport=transport, headers=headers
        )
        self.sleep: Callable[[float], None] = time.sleep  # between reconnections of stream_events

    def close(self) -> None:
        self._http.close()

    @property
    def http(self) -> httpx.Client:
        """The underlying client (base URL, token, no proxy), for a stream of another kind."""
        return self._http

    def failure(self, e: httpx.TransportError) -> CtlError:
        """The one-line error for a request that did not get an answer."""
        return self._failure(e)

    def refused(self, resp: httpx.Response, path: str) -> CtlError:
        """The one-line error for an answer with an error status."""
        return self._refused(resp, path)

    def _failure(self, e: httpx.TransportError) -> CtlError:
        if isinstance(e, httpx.ConnectError):
            return NodeUnreachable(f"no chatter node at {self.base} ({_reason(e)})")
        if isinstance(e, httpx.ConnectTimeout):
            return CtlError(f"no chatter node at {self.base} (timed out)")
        if isinstance(e, httpx.TimeoutException):
            return CtlError(f"no answer from the chatter node at {self.base} (timed out)")
        return CtlError(f"no answer from the chatter node at {self.base} ({_reason(e)})")

    def _refused(self, resp: httpx.Response, path: str) -> CtlError:
        """The error of an answer with an error status: the node's own words when it gave them;
        exit status 2 for a request it refused (4xx), 1 for its failure (5xx)."""
        status = EXIT_USAGE if 400 <= resp.status_code < 500 else EXIT_FAILED
        message = None
        with contextlib.suppress(Exception):
            message = str(resp.json()["error"])
        if resp.status_code == 401:
            hint = "the token given was refused" if self.has_token else "no token found for this node"
            return CtlError(
                f"{self.base}{path}: the node needs its API token ({hint}): "
                "give --token-file PATH or set CHATTER_HTTP_TOKEN",
                status,
            )
        if message:
            return CtlError(message, status)
        return CtlError(f"{self.base}{path} answered {resp.status_code} {resp.reason_phrase}", status)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Sequence[tuple[str, str]] = (),
        accept: Collection[int] = (),
        timeout: float | None = None,
    ) -> Any:
        """The JSON answer; ``accept``: error statuses whose JSON is an answer all the same;
        ``timeout``: for a request that takes longer than most (default: the client's)."""
        try:
            resp = self._http.request(
                method, path, json=body, params=list(params) or None, timeout=timeout or self.timeout
            )
        except httpx.TransportError as e:
            raise self._failure(e) from None
        self.answered = True
        if resp.is_error and resp.status_code not in accept:
            raise self._refused(resp, path)
        try:
            return resp.json()
        except ValueError:
            raise CtlError(f"{self.base} did not answer like a chatter node (not JSON)") from None

    def get(
        self,
        path: str,
        params: Sequence[tuple[str, str]] = (),
        accept: Collection[int] = (),
        timeout: float | None = None,
    ) -> Any:
        return self.request("GET", path, params=params, accept=accept, timeout=timeout)

    def stream_lines(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Iterator[Row]:
        """A streamed answer of one JSON object per line (POST /v1/query), each as it comes;
        ``timeout``: the longest silence between two lines."""
        t = httpx.Timeout(self.timeout, read=timeout or self.timeout)
        try:
            with self._http.stream(method, path, json=body, timeout=t) as resp:
                if resp.is_error:
                    resp.read()
                    raise self._refused(resp, path)
                for line in resp.iter_lines():
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except ValueError:
                        raise CtlError(f"{self.base} did not answer like a chatter node (not JSON)") from None
                    if not isinstance(row, dict):
                        raise CtlError(f"{self.base} did not answer like a chatter node (not an object)")
                    yield row
        except httpx.TransportError as e:
            raise self._failure(e) from None

    def stream_events(self, since: int = 0) -> Iterator[Row]:
        """The node's events after ``since`` (0: every buffered one), then each new one as it
        comes, until the node goes away (NodeUnreachable) or keeps failing (CtlError).

        A stream that ends or breaks is opened again from the last row yielded: the node
        replays what it still holds after it (a reader that fell behind is dropped that way)."""
        last = since
        failures = 0
        delay = RECONNECT_FIRST
        timeout = httpx.Timeout(self.timeout, read=STREAM_READ_TIMEOUT)
        while True:
            try:
                params = {"since": str(last)}
                headers = {"Accept": "text/event-stream"}
                with self._http.stream("GET", STREAM_PATH, params=params, headers=headers, timeout=timeout) as resp:
                    if resp.is_error:
                        resp.read()
                        raise self._refused(resp, STREAM_PATH)
                    failures, delay = 0, RECONNECT_FIRST  # the node answered: the count starts again
                    self.answered = True
                    for event in sse_events(resp.iter_lines()):
                        if event.retry is not None:
                            delay = min(event.retry / 1000, RECONNECT_MAX)
                        if event.data is None:
                            continue
                        try:
                            row = json.loads(event.data)
                            seq = int(row["seq"])
                        except (ValueError, TypeError, KeyError):
                            raise CtlError(f"{self.base} did not answer like a chatter node (bad event)") from None
                        last = seq
                        yield row
                # The node ended the stream (it dropped us as too slow, or it is stopping): reconnect.
            except httpx.TransportError as e:
                failure = self._failure(e)
                if isinstance(failure, NodeUnreachable):
                    raise failure from None
                failures += 1
                if failures >= RECONNECT_TRIES:
                    raise failure from None
            self.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)


@dataclass(frozen=True, slots=True)
class SSEvent:
    """One server-sent event: its data (None for a block without, e.g. only ``retry:``), the
    last event id given so far, and the reconnection delay it sets (ms), if it does."""

    data: str | None
    id: str | None = None
    retry: int | None = None


def sse_events(lines: Iterable[str]) -> Iterator[SSEvent]:
    """Parse the text/event-stream format (WHATWG HTML, "server-sent events"), one line at a
    time: ``data:`` lines joined by newlines, ``id:``, ``retry:``; ``:`` comments skipped;
    a blank line ends an event. The event type (``event:``) is not used by chatter."""
    data: list[str] = []
    ident: str | None = None
    retry: int | None = None
    for line in lines:
        if line == "":
            if data or retry is not None:
                yield SSEvent("\n".join(data) if data else None, ident, retry)
            data, retry = [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "id":
            ident = value
        elif field == "retry" and value.isdigit():
            retry = int(value)
