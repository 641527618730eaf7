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
fails, 2 for bad usage or a request the node refused (bad tags, tags over the size limit).

Plain HTTP with the standard library: these commands start fast and need nothing the daemon
does not already need.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any, NoReturn

from chatterd.core import tags, wire
from chatterd.core.config import CTL_LEAVE_TIMEOUT, CTL_REQUEST_TIMEOUT, DEFAULT_PORT

COMMANDS = ("members", "devices", "events", "leave", "tags", "roles")
ENV_HTTP = "CHATTER_HTTP_ADDR"
DEFAULT_HTTP = f"127.0.0.1:{DEFAULT_PORT}"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

REQUEST_TIMEOUT = CTL_REQUEST_TIMEOUT
FOLLOW_INTERVAL = 0.5  # seconds between polls of `events --follow`
LEAVE_TIMEOUT = CTL_LEAVE_TIMEOUT


class CtlError(Exception):
    """A failure to report in one line, with the exit status to use."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One clear line and exit status 2 (argparse prints the whole usage otherwise)."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------- the API client


def _reason(e: BaseException) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return str(e) or type(e).__name__


class Client:
    """JSON requests to one node's API; every failure becomes a CtlError."""

    def __init__(self, addr: tuple[str, int], timeout: float = REQUEST_TIMEOUT) -> None:
        self.base = f"http://{wire.format_addr(addr)}"
        self.timeout = timeout
        # No proxies: the node is usually on loopback, and http_proxy must not reroute it.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            message = None
            with contextlib.suppress(Exception):
                message = str(json.loads(e.read())["error"])
            if message:
                raise CtlError(message, EXIT_USAGE if e.code == 400 else EXIT_FAILED) from None
            raise CtlError(f"{self.base}{path} answered {e.code} {e.reason}") from None
        except urllib.error.URLError as e:
            reason = e.reason if isinstance(e.reason, BaseException) else OSError(str(e.reason))
            raise CtlError(f"no chatter node at {self.base} ({_reason(reason)})") from None
        except OSError as e:  # a timeout or a reset while reading the answer
            raise CtlError(f"no answer from the chatter node at {self.base} ({_reason(e)})") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise CtlError(f"{self.base} did not answer like a chatter node (not JSON)") from None

    def get(self, path: str) -> Any:
        return self.request("GET", path)


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
    path = "/v1/members"
    if query:
        path += "?" + urllib.parse.urlencode(query)
    rows = client.get(path)
    _print(json.dumps(rows, indent=2) if args.json else members_table(rows))
    return EXIT_OK


def cmd_devices(client: Client, args: argparse.Namespace) -> int:
    rows = client.get("/v1/devices")
    _print(json.dumps(rows, indent=2) if args.json else devices_table(rows))
    return EXIT_OK


def cmd_events(client: Client, args: argparse.Namespace) -> int:
    printer = EventPrinter()
    rows = client.get("/v1/events")
    if not args.json:
        _print(printer.header())
    since = 0
    while True:
        for line in [_compact(r) for r in rows] if args.json else printer.lines(rows):
            _print(line)
        if rows:
            since = rows[-1]["seq"]
        if not args.follow:
            return EXIT_OK
        time.sleep(FOLLOW_INTERVAL)
        rows = client.get(f"/v1/events?since={since}")


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
        except CtlError as e:
            if "connection refused" in str(e):
                _print(f"{name} left the cluster and stopped")
                return EXIT_OK
    raise CtlError(f"{name} announced its leave but its API still answers after {LEAVE_TIMEOUT:g} s")


def cmd_tags(client: Client, args: argparse.Namespace) -> int:
    if args.action == "show":
        h = client.get("/v1/health")
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


def _http_addr(text: str) -> tuple[str, int]:
    text = text.strip().removeprefix("http://").rstrip("/")
    try:
        return wire.parse_addr(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--http",
        type=_http_addr,
        default=argparse.SUPPRESS,  # absent, not None: `tags --http X set` must keep X
        metavar="ADDR",
        help=f"the node's HTTP API (default: ${ENV_HTTP}, else {DEFAULT_HTTP})",
    )
    p = _Parser(prog="chatterd", description="Ask a running chatter node through its HTTP API.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

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
    actions = t.add_subparsers(dest="action", parser_class=_Parser)
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
            addr = _http_addr(text)
        except argparse.ArgumentTypeError as e:
            print(f"chatterd: error: {ENV_HTTP}: {e}", file=sys.stderr)
            return EXIT_USAGE
    try:
        return int(args.run(Client(addr), args))
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
