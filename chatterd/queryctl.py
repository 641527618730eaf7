"""``chatterd query`` and ``chatterd reachability``, as Serf's: ask the node to put a query to
the cluster (POST /v1/query, GET /v1/reachability: chatterd.queryops) and print its acks and
responses as they come, then a summary.

    chatterd query NAME [PAYLOAD] [--node NAME]... [--tag KEY=REGEX]... [--timeout SECONDS]
                   [--no-ack] [--relay-factor N] [--json]
    chatterd reachability [--timeout SECONDS] [--json]

``--json`` prints the node's lines as they are (one JSON object per line). Exit status: 0, or
2 for a query the node refused (too big, a bad name or filter); ``reachability`` exits 1 when
a member did not answer.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from chatterd.apiclient import EXIT_FAILED, REQUEST_TIMEOUT, Client, CtlError, Row
from chatterd.cliargs import EXIT_USAGE, Parser, arg_type
from chatterd.core.config import MAX_RELAY_FACTOR, QUERY_DATA_MAX, QUERY_TIMEOUT_MAX
from chatterd.core.query import QueryError
from chatterd.core.queryfilter import FilterError, parse_tag_filter
from chatterd.core.userquery import check_name, check_timeout


def _relay_factor(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None
    if not 0 <= n <= MAX_RELAY_FACTOR:
        raise ValueError(f"must be 0 to {MAX_RELAY_FACTOR}, got {text!r}")
    return n


def _timeout(text: str) -> float:
    t = check_timeout(text)
    assert t is not None
    return t


_name = arg_type(check_name, QueryError, name="name")
_tag = arg_type(parse_tag_filter, FilterError, name="tag filter")
_relay = arg_type(_relay_factor, name="relay factor")
_seconds = arg_type(_timeout, QueryError, name="timeout")


def cmd_query(client: Client, args: argparse.Namespace) -> int:
    size = len(args.payload.encode())
    if size > QUERY_DATA_MAX:
        raise CtlError(f"the payload is {size} bytes, over the {QUERY_DATA_MAX}-byte limit", EXIT_USAGE)
    body: dict[str, Any] = {
        "name": args.name,
        "payload": args.payload,
        "nodes": args.node,
        "tags": dict(args.tag),
        "ack": not args.no_ack,
        "relay": args.relay_factor,
    }
    if args.timeout is not None:
        body["timeout"] = args.timeout
    rows = client.stream_lines("POST", "/v1/query", body, timeout=_wait(args.timeout))
    _show(rows, args.json, QueryPrinter())
    return 0


def cmd_reachability(client: Client, args: argparse.Namespace) -> int:
    path = "/v1/reachability" + (f"?timeout={args.timeout}" if args.timeout is not None else "")
    printer = ReachPrinter()
    summary = _show(client.stream_lines("GET", path, timeout=_wait(args.timeout)), args.json, printer)
    return EXIT_FAILED if summary.get("silent") or "error" in summary else 0


def _wait(timeout: float | None) -> float:
    return (timeout if timeout is not None else QUERY_TIMEOUT_MAX) + REQUEST_TIMEOUT


def _show(rows: Any, as_json: bool, printer: QueryPrinter) -> Row:
    summary: Row = {}
    for row in rows:
        if row.get("type") == "summary":
            summary = row
        if as_json:
            print(json.dumps(row, ensure_ascii=False), flush=True)
        else:
            for line in printer.lines(row):
                print(line, flush=True)
    if not summary:
        raise CtlError("the node ended the query's stream before its summary")
    return summary


def _ms(row: Row) -> str:
    return f"{row.get('rtt_ms', 0):.1f} ms"


class QueryPrinter:
    """Lines for people, one row of the stream at a time (names padded to the longest asked)."""

    def __init__(self) -> None:
        self.width = 0

    def node(self, row: Row) -> str:
        return str(row.get("node", "")).ljust(self.width)

    def lines(self, row: Row) -> list[str]:
        kind = row.get("type")
        if kind == "query":
            asked = [str(n) for n in row.get("asked", [])]
            self.width = max(map(len, asked), default=0)
            timeout = row.get("timeout_s")
            return [f"query {row.get('name')!r} to {len(asked)} members, timeout {timeout:g} s (id {row.get('id')})"]
        if kind == "ack":
            return [f"ack       {self.node(row)}  {_ms(row)}"]
        if kind == "response":
            return self._response(row)
        if kind == "summary":
            return self._summary(row)
        return []

    def _response(self, row: Row) -> list[str]:
        text = str(row.get("payload", "")).rstrip("\n").splitlines() or [""]
        head = f"response  {self.node(row)}  {_ms(row)}"
        out = [f"{head}  {text[0]}".rstrip()] + [f"    {line}" for line in text[1:]]
        if row.get("error"):
            out.append(f"    error: {row['error']}")
        return out

    def _summary(self, row: Row) -> list[str]:
        if "error" in row:
            return [f"error: {row['error']}"]
        out = [f"asked {row['asked']}, acked {row['acked']}, answered {row['answered']}, timed out {row['timed_out']}"]
        if row.get("silent"):
            out.append(f"timed out (never heard from): {', '.join(row['silent'])}")
        if row.get("no_response"):
            out.append(f"acknowledged without a response (no handler for the name?): {', '.join(row['no_response'])}")
        return out


class ReachPrinter(QueryPrinter):
    def lines(self, row: Row) -> list[str]:
        kind = row.get("type")
        if kind == "query":
            asked = [str(n) for n in row.get("asked", [])]
            self.width = max(map(len, asked), default=0)
            return [f"asking {len(asked)} live members to acknowledge, timeout {row.get('timeout_s'):g} s"]
        if kind == "ack":
            return [f"answered        {self.node(row)}  {_ms(row)}"]
        if kind == "summary" and "error" not in row:
            silent = row.get("silent", [])
            out = [f"did not answer  {n}" for n in silent]
            out.append(f"{row['acked']} of {row['asked']} members answered, {len(silent)} did not")
            if silent:
                out.append(
                    "a member alive in `chatterd members` that did not answer cannot reach this node (a one-way "
                    "fault, or a paused process); one that is down is soon shown dead there"
                )
            return out
        return super().lines(row)


def add_parsers(sub: Any, common: Parser) -> None:
    """The two commands, under ``chatterd``'s subparsers."""
    q = sub.add_parser(
        "query",
        parents=[common],
        help="ask the members a question; print their acks and responses as they come",
        description="A user query, as serf query: the members its filters pick acknowledge it and answer with "
        "their handler (--event-handler query:NAME=COMMAND: its stdout). The default timeout grows with the "
        f"cluster: 1 s per decade of members. Payload and response: at most {QUERY_DATA_MAX} bytes each.",
    )
    q.add_argument("name", type=_name, metavar="NAME", help="the query's name, as the handlers' query:NAME")
    q.add_argument("payload", nargs="?", default="", metavar="PAYLOAD", help="given to each handler on stdin")
    q.add_argument("--node", action="append", default=[], metavar="NAME", help="only this member (repeatable)")
    q.add_argument(
        "--tag",
        action="append",
        default=[],
        type=_tag,
        metavar="KEY=REGEX",
        help="only members whose tag KEY matches REGEX (a search: anchor with ^...$; repeatable)",
    )
    q.add_argument("--no-ack", action="store_true", help="the members do not acknowledge, they only answer")
    q.add_argument(
        "--relay-factor",
        type=_relay,
        default=0,
        metavar="N",
        help=f"each response also comes through N other members (0 to {MAX_RELAY_FACTOR}; default 0)",
    )
    q.set_defaults(run=cmd_query)
    r = sub.add_parser(
        "reachability",
        parents=[common],
        help="ask every live member to acknowledge: who answered, who did not, how long each took",
        description="Every live member is asked to acknowledge (an internal query, no handler). A member alive "
        "in chatterd members that does not answer is paused or cut off one way from this node; a dead one "
        "is shown failed by chatterd members. Exit status 1 when a member did not answer.",
    )
    r.set_defaults(run=cmd_reachability)
    for parser in (q, r):
        parser.add_argument(
            "--timeout",
            type=_seconds,
            default=None,
            metavar="SECONDS",
            help=f"how long to wait for the members (at most {QUERY_TIMEOUT_MAX:g}; default: by the cluster's size)",
        )
        parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="one JSON object per line")
