"""Network coordinates for operators: the rows of GET /v1/coordinates (read from a node's
core, chatterd/core/rtt.py), and ``chatterd rtt NODE [NODE]``, which estimates a round trip
from them the way ``serf rtt`` does: it fetches the coordinates and measures the distance
between the two (the same arithmetic as the node's, chatterd/core/coordinates.py).

    chatterd rtt n2          # from the asked node to n2
    chatterd rtt n2 n3       # between n2 and n3, as the asked node knows them
    chatterd rtt n2 --json   # {"a": ..., "b": ..., "rtt_s": ...}
"""

from __future__ import annotations

import argparse
import json
import math
from typing import TYPE_CHECKING, Any

from chatterd.apiclient import EXIT_FAILED, Client, CtlError
from chatterd.cliargs import EXIT_USAGE
from chatterd.core.coordinates import COORD_DIMENSIONS, COORD_WIRE_MAX, VIVALDI_ERROR_MAX, Coordinate

if TYPE_CHECKING:
    from chatterd.core.node import Node

PATH = "/v1/coordinates"


def coordinate_row(name: str, c: Coordinate) -> dict[str, Any]:
    return {
        "name": name,
        "vec": [round(x, 9) for x in c.vec],
        "error": round(c.error, 6),
        "adjustment": round(c.adjustment, 9),
        "height": round(c.height, 9),
    }


def coordinates_view(node: Node) -> dict[str, Any]:
    """GET /v1/coordinates: this node's name, its Vivaldi figures, and every coordinate it
    knows (its own included), in seconds, sorted by name."""
    rtt = node.rtt
    rows = [coordinate_row(node.name, rtt.vivaldi.coord)]
    rows += [coordinate_row(n, c) for n, c in rtt.known.items() if n in node.table.members]
    rows += [coordinate_row(n, c) for n, c in rtt.heard.items() if n in node.table.members and n not in rtt.known]
    return {
        "node": node.name,
        "enabled": rtt.enabled,
        "samples": node.stats["rtt_samples"],
        "coordinates": sorted(rows, key=lambda r: r["name"]),
    }


# ---------------------------------------------------------------------- chatterd rtt


def _parse(row: Any) -> Coordinate:
    """A row of the node's answer as a Coordinate; CtlError if it is not one."""
    try:
        vec = tuple(float(x) for x in row["vec"])
        c = Coordinate(vec, float(row["error"]), float(row["adjustment"]), float(row["height"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CtlError(f"the node sent a malformed coordinate: {e}") from None
    bound = COORD_WIRE_MAX / 1e6
    if len(vec) != COORD_DIMENSIONS or not c.is_valid() or max(map(abs, (*vec, c.adjustment, c.height))) > bound:
        raise CtlError("the node sent a malformed coordinate")
    if not 0 <= c.error <= VIVALDI_ERROR_MAX or not math.isfinite(c.error):
        raise CtlError("the node sent a malformed coordinate")
    return c


def cmd_rtt(client: Client, args: argparse.Namespace) -> int:
    if len(args.nodes) > 2:
        raise CtlError("rtt takes one or two NODE names (see chatterd rtt --help)", EXIT_USAGE)
    answer = client.get(PATH)
    if not answer.get("enabled", True):
        raise CtlError(f"{answer.get('node')} computes no network coordinates (coordinates are off)")
    rows = {r.get("name"): r for r in answer.get("coordinates", []) if isinstance(r, dict)}
    a, b = (answer.get("node"), args.nodes[0]) if len(args.nodes) == 1 else args.nodes
    missing = [n for n in (a, b) if n not in rows]
    if missing:
        raise CtlError(
            f"{answer.get('node')} has no coordinate for {', '.join(map(str, missing))} yet "
            f"(it knows {len(rows)}: they come with its round-trip probes and their answers, see chatterd rtt --help)",
            EXIT_FAILED,
        )
    est = _parse(rows[a]).distance(_parse(rows[b]))
    if args.json:
        print(json.dumps({"a": a, "b": b, "rtt_s": round(est, 9)}), flush=True)
    else:
        print(f"Estimated {a} <-> {b} rtt: {est * 1000:.3f} ms (from {answer.get('node')}'s coordinates)", flush=True)
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    r = sub.add_parser(
        "rtt",
        parents=[common],
        help="estimate the round trip between two nodes from network coordinates",
        description="Estimate the round trip between two nodes from their Vivaldi network coordinates, like "
        "serf rtt: with one NODE, from the asked node to NODE; with two, between them. The coordinates come "
        "from a round-trip probe each node sends one member every --rtt-interval (60 s in the lan profile, the "
        "first 16 every second); each answer also passes on two coordinates the answerer measured of other "
        "members, so the asked node knows most members' coordinates within 30 s of its start (all within N "
        "intervals), and the estimates settle within the hour (minutes at --rtt-interval 5).",
    )
    r.add_argument("nodes", nargs="+", metavar="NODE", help="one or two member names")
    r.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON for scripts")
    r.set_defaults(run=cmd_rtt)
