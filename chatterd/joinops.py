"""``chatterd join ADDR...`` (``POST /v1/join``), as ``serf join``: a running node knocks on
other nodes, as on its seeds at start, and reports which answered.

    POST /v1/join   {"addrs": ["HOST:PORT", ...], "timeout": SECONDS}

Each address takes the forms of ``--join`` (an IP address and port, a DNS name, ``dns+`` or
``dnssrv+``: chatterd.seeds). The node sends its Join to every address resolved (the core's
``Sync.knock``), again every ``join_retry_interval`` until each is a live member of its table
or the timeout (default 5 s, at most 60) runs out. A node of another cluster answers with its
state and the two clusters merge by gossip, as a healed partition does. The node's seeds do
not change: a restart joins through ``--join`` (and ``--data-dir``'s peers) as before.

The answer: ``asked`` (the addresses as given), ``resolved``, ``joined`` (the addresses now
live members, with their names), ``not_joined``, ``errors`` (names that did not resolve) and
``members`` (live members now, this node included). The command exits 1 when none joined.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse

from chatterd import seeds
from chatterd.core import wire
from chatterd.core.membership import LIVE

if TYPE_CHECKING:
    from chatterd.core.node import Node
    from chatterd.runtime import Runtime

Addr = tuple[str, int]

JOIN_TIMEOUT = 5.0  # as long as a Serf join waits for its TCP push-pull, about
JOIN_TIMEOUT_MAX = 60.0
MAX_JOIN_ADDRS = 16  # per request; each may stand for several addresses (seeds.MAX_SEEDS in all)
MAX_ADDR_TEXT = 300  # characters of one address as given
POLL_S = 0.05  # how often the table is looked at while waiting for the answers
JOIN_FIELDS = {"addrs", "timeout"}


def parse_body(body: Any) -> tuple[list[seeds.Seed], float]:
    """The seeds and the timeout of a request (ValueError with a clear text)."""
    if not isinstance(body, dict) or not set(body) <= JOIN_FIELDS or "addrs" not in body:
        raise ValueError('the body must be {"addrs": ["HOST:PORT", ...], "timeout": SECONDS}')
    addrs, timeout = body["addrs"], body.get("timeout", JOIN_TIMEOUT)
    if not isinstance(addrs, list) or not 0 < len(addrs) <= MAX_JOIN_ADDRS:
        raise ValueError(f'"addrs" must be a list of 1 to {MAX_JOIN_ADDRS} addresses')
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= JOIN_TIMEOUT_MAX:
        raise ValueError(f'"timeout" must be a number of seconds above 0, at most {JOIN_TIMEOUT_MAX:g}')
    parsed = []
    for text in addrs:
        if not isinstance(text, str) or not 0 < len(text) <= MAX_ADDR_TEXT:
            raise ValueError(f"an address must be HOST:PORT, at most {MAX_ADDR_TEXT} characters")
        parsed.append(seeds.parse_seed(text))
    return parsed, float(timeout)


def _live_name(node: Node, addr: Addr) -> str | None:
    name = node.table.name_at(addr)
    m = None if name is None else node.table.get(name)
    return name if m is not None and m.state in LIVE and name != node.name else None


async def join(rt: Runtime, wanted: list[seeds.Seed], timeout: float) -> dict[str, Any]:
    node, sock = rt.node, rt.sock
    assert node is not None and sock is not None
    deadline = trio.current_time() + timeout
    resolved: list[Addr] = []
    errors = [f"the names did not resolve within {timeout:g} s"]
    with trio.move_on_at(deadline):
        resolved, errors = await seeds.resolve(wanted, seeds.Lookup(), v6=sock.family == socket.AF_INET6)
    pending = [a for a in resolved if a != node.addr]
    joined: dict[Addr, str] = {}
    retry = node.cfg.join_retry_interval
    while pending and trio.current_time() < deadline:
        node.sync.knock(pending)
        rt._pump()  # sent now, not at the protocol loop's next turn
        again = min(trio.current_time() + retry, deadline)
        while pending and trio.current_time() < again:
            await trio.sleep(POLL_S)
            for a in pending:
                name = _live_name(node, a)
                if name is not None:
                    joined[a] = name
            pending = [a for a in pending if a not in joined]
    return {
        "asked": [s.text for s in wanted],
        "resolved": [wire.format_addr(a) for a in resolved],
        "joined": [{"addr": wire.format_addr(a), "node": n} for a, n in joined.items()],
        "not_joined": [wire.format_addr(a) for a in pending],
        "errors": errors,
        "members": sum(1 for m in node.table.members.values() if m.state in LIVE),
    }


async def endpoint(rt: Runtime, request: Request) -> JSONResponse:
    """POST /v1/join (mounted, and marked as changing something, by chatterd.opsapi)."""
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"error": "the body must be JSON"}, status_code=400)
    try:
        wanted, timeout = parse_body(body)
    except ValueError as e:
        return JSONResponse({"error": str(e)}, status_code=400)
    node = rt.node
    assert node is not None
    if node.leaving:
        return JSONResponse({"error": "the node is leaving"}, status_code=409)
    return JSONResponse(await join(rt, wanted, timeout))
