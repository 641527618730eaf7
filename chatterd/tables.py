"""The operator commands' tables: aligned columns for people (``chatterd members``,
``devices``, ``events``, ``roles``)."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned on the widest cell, two spaces apart; no trailing spaces."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [headers, *rows]]
    return "\n".join(lines)


def format_tags(t: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(t.items()))


def _seconds(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}s"


def compact(v: Any) -> str:
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
        [[r["origin"], r["name"], r["description"], compact(r["metrics"])] for r in rows],
    )


def event_detail(row: dict[str, Any]) -> str:
    p = row["payload"]
    if not row["kind"].startswith("member-"):
        return compact(p)
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


def roles_table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "no roles: start nodes with --role or --roles PREFIXA..B (a missing lease or a failing check hides them)"
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


def keys_report(r: dict[str, Any]) -> str:
    """``chatterd keys``: who answered, each key with how many hold it and use it, the errors."""
    members, answered = r["members"], r["answered"]
    lines = [f"{r['op']}: {answered} of {members} members answered"]
    if r["keys"]:
        lines += [
            "",
            table(
                ["KEY", "HELD BY", "PRIMARY ON"],
                [[k, f"{n}/{answered}", str(r["primary"].get(k, 0))] for k, n in r["keys"].items()],
            ),
        ]
    if r["errors"]:
        lines += ["", "errors:"] + [f"  {node}: {text}" for node, text in r["errors"].items()]
    if r["missing"]:
        lines += ["", "no answer from: " + ", ".join(r["missing"])]
    return "\n".join(lines)
