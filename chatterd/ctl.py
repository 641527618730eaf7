"""Operator commands: ask a running node, through its HTTP API, the way ``serf members`` does.

    chatterd members [--status STATE]... [--tag KEY=VALUE]... [--json]
    chatterd devices [--json]
    chatterd events [--follow] [--json]
    chatterd leave
    chatterd tags [show | set KEY=VALUE... | delete KEY...] [--json]
    chatterd keys [list | install KEY | use KEY | remove KEY [--force]] [--timeout SECONDS] [--json]
    chatterd query NAME [PAYLOAD] [--node NAME]... [--tag KEY=REGEX]... [--timeout SECONDS]
                   [--no-ack] [--relay-factor N] [--json]          (chatterd.queryctl)
    chatterd reachability [--timeout SECONDS] [--json]
    chatterd rtt NODE [NODE] [--json]     (chatterd/coords.py)
    chatterd info | force-leave NAME [--prune] | monitor [--log-level LEVEL] | join ADDR...   (chatterd.opsctl)

Each talks to the node at ``--http ADDR``, given before or after the command (default:
``$CHATTER_HTTP_ADDR``, else the node this user started on this host, else 127.0.0.1:2428:
chatterd.nodefind), with the
node's API token when one is found (``--token-file``, ``$CHATTER_HTTP_TOKEN``, else the file
the node made for that address: chatterd.httpauth). Output is
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
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from chatterd import coords, nodefind, opsctl, queryctl
from chatterd.apiclient import (  # noqa: F401  (some re-exported: tests use them as ctl.NAME)
    EXIT_FAILED,
    RECONNECT_TRIES,
    REQUEST_TIMEOUT,
    STREAM_PATH,
    Client,
    CtlError,
    NodeUnreachable,
    Row,
    SSEvent,
    sse_events,
)
from chatterd.cliargs import COMMANDS, EXIT_USAGE, Parser, http_address, positive_float
from chatterd.core import tags
from chatterd.core.config import CTL_LEAVE_TIMEOUT, QUERY_TIMEOUT
from chatterd.httpauth import ENV_TOKEN, TokenError, find_token
from chatterd.tables import (
    EventPrinter,
    compact,
    devices_table,
    format_tags,
    keys_report,
    members_table,
    roles_table,
    table,
)

ENV_HTTP, DEFAULT_HTTP = nodefind.ENV_HTTP, nodefind.DEFAULT_HTTP
EXIT_OK = 0  # EXIT_FAILED (1): chatterd.apiclient; EXIT_USAGE (2): chatterd.cliargs

LEAVE_TIMEOUT = CTL_LEAVE_TIMEOUT


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
        for line in [compact(r) for r in rows] if args.json else printer.lines(rows):
            _print(line)

    rows: list[Row] = client.get("/v1/events")
    if not args.json:
        _print(printer.header())
    show(rows)
    if args.follow:  # then the stream, from the last row shown
        for row in client.stream_events(since=rows[-1]["seq"] if rows else 0):
            show([row])
    return EXIT_OK


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


def cmd_keys(client: Client, args: argparse.Namespace) -> int:
    """Serf's `keys`: the operation goes to every member; exit 1 unless every one did it."""
    wait = args.timeout * 2 + REQUEST_TIMEOUT  # a removal asks twice
    if args.action == "list":
        result = client.get("/v1/keys", params=[("timeout", str(args.timeout))], timeout=wait)
    else:
        body = {"key": args.key, "force": args.force, "timeout": args.timeout}
        result = client.request("POST", f"/v1/keys/{args.action}", body, timeout=wait)
    _print(json.dumps(result, indent=2) if args.json else keys_report(result))
    return EXIT_FAILED if result["errors"] or result["missing"] else EXIT_OK


# ---------------------------------------------------------------------- parsing


def _common_parser() -> Parser:
    """The options every command takes: where the node is, and its token."""
    common = Parser(add_help=False)  # Parser too: the subparsers (of class Parser) take it as a parent
    common.add_argument(
        "--http",
        type=http_address,
        default=argparse.SUPPRESS,  # absent, not None: `tags --http X set` must keep X
        metavar="ADDR",
        help=f"the node's HTTP API, also before the command: chatterd --http ADDR COMMAND (default: ${ENV_HTTP}, "
        f"else the node this user started on this host, else {DEFAULT_HTTP})",
    )
    common.add_argument(
        "--token-file",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="PATH",
        help=f"the node's API token (default: ${ENV_TOKEN}, else the file the node made for its --http address "
        "in the user's runtime dir, or in --data-dir)",
    )
    common.add_argument(
        "--data-dir",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="DIR",
        help="the node's --data-dir: look for its token there too",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_parser()
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
    _keys_parser(sub, common)
    queryctl.add_parsers(sub, common)
    coords.add_parser(sub, common)
    opsctl.add_parsers(sub, common)  # info, force-leave, monitor
    return p


def _keys_parser(sub: Any, common: Parser) -> None:
    k = sub.add_parser(
        "keys",
        parents=[common],
        help="the gossip keyring of every member: list, install, use, remove",
        description="Keyring operations on every live member, like serf keys: each reports how many members "
        "answered and how many hold each key. A rotation: keys install NEW, keys use NEW, keys remove OLD. "
        "remove refuses a key that a member (a failed one included) still uses, unless --force.",
    )
    actions = k.add_subparsers(dest="action", parser_class=Parser)
    k.set_defaults(action="list", key=None, force=False, run=cmd_keys)
    for name, what in (
        ("list", "the keys every member holds (the default)"),
        ("install", "add KEY to every keyring (it opens, it does not seal yet)"),
        ("use", "make the installed KEY the primary everywhere (it seals)"),
        ("remove", "remove KEY from every keyring (never a primary)"),
    ):
        a = actions.add_parser(name, parents=[common], help=what)
        if name != "list":
            a.add_argument("key", metavar="KEY", help="base64, e.g. from chatterd keygen")
        if name == "remove":
            a.add_argument("--force", action="store_true", help="even if a member, a failed one included, uses KEY")
    for parser in (k, *actions.choices.values()):
        parser.add_argument(
            "--timeout",
            type=positive_float,
            default=argparse.SUPPRESS if parser is not k else QUERY_TIMEOUT,
            metavar="SECONDS",
            help=f"how long to wait for the members' answers (default {QUERY_TIMEOUT:g} s)",
        )
        parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON for scripts")


def main(argv: list[str]) -> int:
    argv = nodefind.hoist(argv, COMMANDS) or argv  # `chatterd --http ADDR members` too
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)  # options default to absent (see build_parser)
    try:
        found = nodefind.find(getattr(args, "http", None))
        token = find_token(found.addr, getattr(args, "token_file", None), getattr(args, "data_dir", None))
    except (nodefind.FindError, TokenError) as e:
        print(f"chatterd: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if found.note is not None:
        print(f"chatterd: {found.note}", file=sys.stderr)
    client = Client(found.addr, token=token)
    try:
        return int(args.run(client, args))
    except NodeUnreachable as e:  # where the address came from, unless the node answered before
        print(f"chatterd: error: {e if client.answered else found.unreachable(str(e))}", file=sys.stderr)
        return e.status
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
