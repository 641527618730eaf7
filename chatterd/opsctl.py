"""The operator commands that look into one node or act on a failed member, like Serf's:

    chatterd info [--json]                       serf info: node, protocol, counters, config in effect
    chatterd force-leave NAME [--prune] [--json]  serf force-leave: a failed member moves to left everywhere
    chatterd monitor [--log-level LEVEL] [--json] serf monitor: the node's log lines as they happen
    chatterd join ADDR... [--timeout SECONDS] [--json]  serf join: knock on other nodes (chatterd.joinops)

They talk to the node as every command does (chatterd.ctl: where the node is, its token) and
read chatterd.opsapi's routes. ``monitor`` runs until interrupted or until the node stops.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx

from chatterd.apiclient import EXIT_FAILED, Client, CtlError, sse_events
from chatterd.cliargs import positive_float
from chatterd.joinops import JOIN_TIMEOUT, JOIN_TIMEOUT_MAX
from chatterd.tables import compact, format_tags

EXIT_OK = 0
MONITOR_PATH = "/v1/monitor"
MONITOR_READ_TIMEOUT = 45.0  # three of the node's keep-alives (chatterd.opsapi.MONITOR_KEEPALIVE_S)
LOG_LEVELS = ("trace", "debug", "info", "warn", "error")


def _print(text: str) -> None:
    print(text, flush=True)


# ---------------------------------------------------------------------- info


def _value(v: Any) -> str:
    if isinstance(v, dict) and all(isinstance(x, str) for x in v.values()):
        return format_tags(v) or "(none)"
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return ", ".join(v) or "(none)"
    if v is None:
        return "(none)"
    if v == "":
        return "(none)"
    return v if isinstance(v, str) else compact(v)


def info_text(info: dict[str, Any]) -> str:
    """``serf info``'s layout: a section per part, ``key = value`` lines, keys sorted within
    counters and config."""
    lines: list[str] = []
    for section in ("node", "protocol", "agent", "members", "roles_held", "counters", "config"):
        body = info.get(section)
        if not isinstance(body, dict):
            continue
        lines.append(f"{section}:")
        keys = sorted(body) if section in ("counters", "config", "members", "roles_held") else list(body)
        if not keys:
            lines.append("\t(none)")
        for key in keys:
            lines.append(f"\t{key} = {_value(body[key])}")
    return "\n".join(lines)


def cmd_info(client: Client, args: argparse.Namespace) -> int:
    info = client.get("/v1/info")
    _print(json.dumps(info, indent=2) if args.json else info_text(info))
    return EXIT_OK


# ---------------------------------------------------------------------- force-leave


def cmd_force_leave(client: Client, args: argparse.Namespace) -> int:
    result = client.request("POST", "/v1/force-leave", {"node": args.name, "prune": args.prune})
    if args.json:
        _print(json.dumps(result, indent=2))
        return EXIT_OK
    name, told = result["node"], result["members_told"]
    if result["left"]:
        what = f"{name} ({result['before']}) moved to left"
    else:
        what = f"{name} had left already"
    if result["pruned"]:
        what += ", and pruned from the member tables"
    _print(f"{what}; the news goes to the {told} live member{'s' if told != 1 else ''} by gossip")
    return EXIT_OK


# ---------------------------------------------------------------------- join


def cmd_join(client: Client, args: argparse.Namespace) -> int:
    body = {"addrs": args.addrs, "timeout": args.timeout}
    result = client.request("POST", "/v1/join", body, timeout=args.timeout + 10)  # + DNS, + the answer
    if args.json:
        _print(json.dumps(result, indent=2))
    else:
        for j in result["joined"]:
            _print(f"joined      {j['addr']}  ({j['node']})")
        for a in result["not_joined"]:
            _print(f"no answer   {a}")
        for e in result["errors"]:
            _print(f"not found   {e}")
        n, asked = len(result["joined"]), len(result["resolved"])
        _print(f"joined {n} of {asked} address{'es' if asked != 1 else ''}; {result['members']} live members now")
    return EXIT_OK if result["joined"] else EXIT_FAILED


# ---------------------------------------------------------------------- monitor


def log_line(row: dict[str, Any]) -> str:
    """A log event for people: time, level, logger, event, then key=value."""
    rest = {k: v for k, v in row.items() if k not in ("timestamp", "level", "logger", "event")}
    stamp = str(row.get("timestamp", ""))[11:23]
    kv = " ".join(f"{k}={v if isinstance(v, str) else compact(v)}" for k, v in rest.items())
    return f"{stamp}  {row.get('level', ''):<7}  {row.get('logger', '')}  {row.get('event', '')}  {kv}".rstrip()


def cmd_monitor(client: Client, args: argparse.Namespace) -> int:
    timeout = httpx.Timeout(client.timeout, read=MONITOR_READ_TIMEOUT)
    params = {"level": args.log_level}
    try:
        with client.http.stream("GET", MONITOR_PATH, params=params, timeout=timeout) as resp:
            if resp.is_error:
                resp.read()
                raise client.refused(resp, MONITOR_PATH)
            client.answered = True
            for event in sse_events(resp.iter_lines()):
                if event.data is None:
                    continue
                try:
                    row = json.loads(event.data)
                except ValueError:
                    raise CtlError(f"{client.base} did not answer like a chatter node (bad log line)") from None
                _print(event.data if args.json else log_line(row))
    except httpx.TransportError as e:
        if not client.answered:
            raise client.failure(e) from None
    raise CtlError(f"the node at {client.base} ended the stream: it stopped or left")


# ---------------------------------------------------------------------- parsing


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """The parsers of info, force-leave and monitor, under chatterd.ctl's subcommands."""
    i = sub.add_parser("info", parents=[common], help="this node: identity, protocol, counters, the config in effect")
    i.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON for scripts")
    i.set_defaults(run=cmd_info)

    f = sub.add_parser(
        "force-leave",
        parents=[common],
        help="move a failed member to left on every node (--prune: erase it too)",
        description="Like serf force-leave: a member this node holds dead is marked left cluster-wide, so that "
        "nobody tries to reconnect to it and its roles move on; --prune also erases it from every member "
        "table at once instead of after reap_after. A live member cannot be force-left (it would refute).",
    )
    f.add_argument("name", metavar="NAME", help="the member's name, as chatterd members shows it")
    f.add_argument("--prune", action="store_true", help="erase it from every member table too")
    f.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON for scripts")
    f.set_defaults(run=cmd_force_leave)

    j = sub.add_parser(
        "join",
        parents=[common],
        help="knock on other nodes, as on seeds: their cluster and ours merge",
        description="Like serf join: the node sends its Join to each address (the forms of --join: IP:PORT, "
        "NAME:PORT, dns+NAME:PORT, dnssrv+NAME), again every join_retry_interval, until each is a live "
        "member or --timeout runs out. Exit status 1 when none joined. The node's seeds do not change.",
    )
    j.add_argument("addrs", nargs="+", metavar="ADDR", help="a node's gossip address, as for --join")
    j.add_argument(
        "--timeout",
        type=positive_float,
        default=JOIN_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the answers (default {JOIN_TIMEOUT:g}, at most {JOIN_TIMEOUT_MAX:g})",
    )
    j.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON for scripts")
    j.set_defaults(run=cmd_join)

    m = sub.add_parser(
        "monitor",
        parents=[common],
        help="print the node's log lines as they happen, until interrupted",
        description="Like serf monitor: stream the node's log lines live, at --log-level or above, whatever "
        "level the node itself logs at (with no monitor, the node does not pay for the lower levels).",
    )
    m.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        metavar="LEVEL",
        help=f"the lowest level shown: {', '.join(LOG_LEVELS)} (default: info)",
    )
    m.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="one JSON object per line")
    m.set_defaults(run=cmd_monitor)
