"""Operator commands: ask a running node, through its HTTP API, the way ``serf members`` does.

    chatterd members [--status STATE]... [--tag KEY=VALUE]... [--json]
    chatterd devices [--json]
    chatterd events [--follow] [--json]
    chatterd leave
    chatterd tags [show | set KEY=VALUE... | delete KEY...] [--json]

Each talks to the node at ``--http ADDR`` (default: ``$CHATTER_HTTP_ADDR``, else
127.0.0.1:2428, where ``chatterd`` with its default ``--listen`` serves its API). Output is
an aligned table for people; ``--json`` gives the API's JSON for scripts (JSON lines for
events). Failures are one line on stderr: exit status 1 when the node cannot be reached or
fails (5xx), 2 for bad usage or a request the node refused (4xx: bad tags, tags over the size
limit).

HTTP with httpx's synchronous client (a dependency of the daemon anyway), never through a
proxy. ``events --follow`` reads the node's server-sent event stream (GET /v1/events/stream):
the buffered events, then each new one as it happens; when the stream breaks it reconnects
from the last event it printed, and it ends with one error line once no node answers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import sys
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from chatterd.cliargs import EXIT_USAGE, Parser, http_address
from chatterd.core import tags, wire
from chatterd.core.config import CTL_LEAVE_TIMEOUT, CTL_REQUEST_TIMEOUT, DEFAULT_PORT

COMMANDS = ("members", "devices", "events", "leave", "tags", "roles")
ENV_HTTP = "CHATTER_HTTP_ADDR"
DEFAULT_HTTP = f"127.0.0.1:{DEFAULT_PORT}"
EXIT_OK, EXIT_FAILED = 0, 1  # and EXIT_USAGE (2), from chatterd.cliargs

REQUEST_TIMEOUT = CTL_REQUEST_TIMEOUT
LEAVE_TIMEOUT = CTL_LEAVE_TIMEOUT
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
    ) -> None:
        self.base = f"http://{wire.format_addr(addr)}"
        self.timeout = timeout
        # No proxies (trust_env=False): the node is usually on loopback, and http_proxy must not
        # reroute it.
        self._http = httpx.Client(base_url=self.base, timeout=timeout, trust_env=False, transport=transport)
        self.sleep: Callable[[float], None] = time.sleep  # between reconnections of stream_events

    def close(self) -> None:
        self._http.close()

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
    ) -> Any:
        """The JSON answer; ``accept``: error statuses whose JSON is an answer all the same."""
        try:
            resp = self._http.request(method, path, json=body, params=list(params) or None)
        except httpx.TransportError as e:
            raise self._failure(e) from None
        if resp.is_error and resp.status_code not in accept:
            raise self._refused(resp, path)
        try:
            return resp.json()
        except ValueError:
            raise CtlError(f"{self.base} did not answer like a chatter node (not JSON)") from None

    def get(self, path: str, params: Sequence[tuple[str, str]] = (), accept: Collection[int] = ()) -> Any:
        return self.request("GET", path, params=params, accept=accept)

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


# ---------------------------------------------------------------------- formatting


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned on the widest cell, two spaces apart; no trailing spaces."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [headers, *rows]]
    return "\n".join(lines)


def format_tags(t: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(t.items()))


def _seconds(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}s"


def _compact(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def members_table(rows: list[dict[str, Any]]) -> str:
    return table(
        ["NAME", "ADDR", "STATE", "INCARNATION", "LAST HEARD", "TAGS"],
        [
            [
                r["name"],
                r["addr"],
                r["state"],
                str(r["incarnation"]),
                _seconds(r["last_heard_s"]),
                format_tags(r["tags"]),
            ]
            for r in rows
        ],
    )


def devices_table(rows: list[dict[str, Any]]) -> str:
    return table(
        ["ORIGIN", "NAME", "DESCRIPTION", "METRICS"],
        [[r["origin"], r["name"], r["description"], _compact(r["metrics"])] for r in rows],
    )


def event_detail(row: dict[str, Any]) -> str:
    p = row["payload"]
    if not row["kind"].startswith("member-"):
        return _compact(p)
    parts = [f"addr={p['addr']}", f"inc={p['incarnation']}"]
    if p.get("by"):
        parts.append(f"by={p['by']}")
    if p.get("after_s") is not None:
        parts.append(f"after={p['after_s']}s")
    if p.get("tags"):
        parts.append(f"tags={format_tags(p['tags'])}")
    return " ".join(parts)


class EventPrinter:
    """Event lines under one header; the origin column widens as longer names come by."""

    def __init__(self) -> None:
        self.width = len("ORIGIN")

    def header(self) -> str:
        return f"{'SEQ':>5}  {'TIME':<12}  {'KIND':<14}  {'ORIGIN':<{self.width}}  DETAIL"

    def lines(self, rows: list[dict[str, Any]]) -> list[str]:
        self.width = max([self.width, *(len(r["origin"]) for r in rows)])
        out = []
        for r in rows:
            t = datetime.datetime.fromtimestamp(r["received_at"]).strftime("%H:%M:%S.%f")[:12]
            line = f"{r['seq']:>5}  {t:<12}  {r['kind']:<14}  {r['origin']:<{self.width}}  {event_detail(r)}"
            out.append(line.rstrip())
        return out


# ---------------------------------------------------------------------- commands


def _print(text: str) -> None:
    print(text, flush=True)


def cmd_members(client: Client, args: argparse.Namespace) -> int:
    query = [("status", s) for s in args.status] + [("tag", t) for t in args.tag]
    rows = client.get("/v1/members", params=query)
    _print(json.dumps(rows, indent=2) if args.json else members_table(rows))
    return EXIT_OK


def cmd_devices(client: Client, args: argparse.Namespace) -> int:
    rows = client.get("/v1/devices")
    _print(json.dumps(rows, indent=2) if args.json else devices_table(rows))
    return EXIT_OK


def cmd_events(client: Client, args: argparse.Namespace) -> int:
    printer = EventPrinter()

    def show(rows: list[Row]) -> None:
        for line in [_compact(r) for r in rows] if args.json else printer.lines(rows):
            _print(line)

    rows: list[Row] = client.get("/v1/events")
    if not args.json:
        _print(printer.header())
    show(rows)
    if args.follow:  # then the stream, from the last row shown
        for row in client.stream_events(since=rows[-1]["seq"] if rows else 0):
            show([row])
    return EXIT_OK


def roles_table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "no roles: start nodes with --role NAME[:PRIORITY]"
    out = []
    for r in rows:
        since = "-" if r["since"] is None else time.strftime("%H:%M:%S", time.localtime(r["since"]))
        cands = " ".join(f"{n}:{p}" for n, p in r["candidates"].items()) or "-"
        here = "held here" if r["held_here"] else ("waiting for lock" if r["waiting_for_lock"] else "")
        if not here and r.get("why_not_here"):
            here = r["why_not_here"]
        holder = r["holder"] or "-"
        if r["holder"] and r["holder_state"] not in (None, "alive"):
            holder += f" ({r['holder_state']})"
        out.append([r["role"], holder, str(r["epoch"]), since, cands, here])
    return table(["ROLE", "HOLDER", "EPOCH", "SINCE", "CANDIDATES", "HERE"], out)


def cmd_roles(client: Client, args: argparse.Namespace) -> int:
    rows = client.get("/v1/roles")
    _print(json.dumps(rows, indent=2) if args.json else roles_table(rows))
    return EXIT_OK


def cmd_leave(client: Client, args: argparse.Namespace) -> int:
    name = client.request("POST", "/v1/leave")["name"]
    deadline = time.monotonic() + LEAVE_TIMEOUT
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            client.get("/v1/health")
        except NodeUnreachable:
            _print(f"{name} left the cluster and stopped")
            return EXIT_OK
        except CtlError:
            pass  # still stopping (503 while leaving, or a request cut short)
    raise CtlError(f"{name} announced its leave but its API still answers after {LEAVE_TIMEOUT:g} s")


def cmd_tags(client: Client, args: argparse.Namespace) -> int:
    if args.action == "show":
        h = client.get("/v1/health", accept=[503])  # a degraded node answers 503, with its tags
        name, current, inc = h["name"], h["tags"], h["incarnation"]
        result = {"name": name, "tags": current, "incarnation": inc}
    else:
        try:
            if args.action == "set":
                body: dict[str, Any] = {"set": tags.parse_pairs(args.items)}
            else:
                for key in args.items:
                    if "=" in key or not key:
                        raise tags.TagsError(f"invalid tag key {key!r}: give the key alone")
                body = {"delete": list(args.items)}
        except tags.TagsError as e:
            raise CtlError(str(e), EXIT_USAGE) from None
        result = client.request("PUT", "/v1/tags", body)
        name, current, inc = result["name"], result["tags"], result["incarnation"]
    if args.json:
        _print(json.dumps(result, indent=2))
    elif args.action == "show":
        _print(table(["KEY", "VALUE"], [[k, v] for k, v in sorted(current.items())]))
    else:
        change = "updated" if result["changed"] else "unchanged"
        _print(f"{name}: tags {change} (incarnation {inc}): {format_tags(current) or '(none)'}")
    return EXIT_OK


# ---------------------------------------------------------------------- parsing


def build_parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)  # Parser too: the subparsers (of class Parser) take it as a parent
    common.add_argument(
        "--http",
        type=http_address,
        default=argparse.SUPPRESS,  # absent, not None: `tags --http X set` must keep X
        metavar="ADDR",
        help=f"the node's HTTP API (default: ${ENV_HTTP}, else {DEFAULT_HTTP})",
    )
    p = Parser(prog="chatterd", description="Ask a running chatter node through its HTTP API.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    m = sub.add_parser("members", parents=[common], help="list the members this node knows")
    m.add_argument(
        "--status",
        action="append",
        default=[],
        metavar="STATE",
        help="only members in this state: alive, suspect, dead, left (repeatable, or a comma list)",
    )
    m.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="only members with this tag")
    m.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON for scripts")
    m.set_defaults(run=cmd_members)

    d = sub.add_parser("devices", parents=[common], help="list the cluster's devices")
    d.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON for scripts")
    d.set_defaults(run=cmd_devices)

    e = sub.add_parser("events", parents=[common], help="show recent events (membership changes, messages)")
    e.add_argument("--follow", "-f", action="store_true", help="keep printing new events until interrupted")
    e.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="one JSON object per line")
    e.set_defaults(run=cmd_events)

    r = sub.add_parser("roles", parents=[common], help="who holds each role, with its epoch and candidates")
    r.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON for scripts")
    r.set_defaults(run=cmd_roles)

    lv = sub.add_parser("leave", parents=[common], help="leave the cluster gracefully and stop the daemon")
    lv.set_defaults(run=cmd_leave)

    t = sub.add_parser(
        "tags",
        parents=[common],
        help="show or change this node's tags",
        description="Show this node's tags, or change them: the change is gossiped at a higher incarnation "
        f"and fires member-update on every node. Tags take at most {tags.MAX_TAGS_BYTES} bytes (as JSON).",
    )
    t.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON for scripts")
    actions = t.add_subparsers(dest="action", parser_class=Parser)
    t.set_defaults(action="show", items=[])  # after add_subparsers, or its default (None) wins
    show = actions.add_parser("show", parents=[common], help="this node's tags (the default)")
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON for scripts")
    ts = actions.add_parser("set", parents=[common], help="add or change tags")
    ts.add_argument("items", nargs="+", metavar="KEY=VALUE")
    ts.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON for scripts")
    td = actions.add_parser("delete", parents=[common], help="remove tags")
    td.add_argument("items", nargs="+", metavar="KEY")
    td.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON for scripts")
    t.set_defaults(run=cmd_tags)
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)  # options default to absent (see build_parser)
    addr = getattr(args, "http", None)
    if addr is None:
        text = os.environ.get(ENV_HTTP) or DEFAULT_HTTP
        try:
            addr = http_address(text)
        except argparse.ArgumentTypeError as e:
            print(f"chatterd: error: {ENV_HTTP}: {e}", file=sys.stderr)
            return EXIT_USAGE
    client = Client(addr)
    try:
        return int(args.run(client, args))
    except CtlError as e:
        print(f"chatterd: error: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (head, less) went away: stop quietly, and keep Python from complaining at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    finally:
        client.close()
