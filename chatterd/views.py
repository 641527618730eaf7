"""The JSON rows the HTTP API, the operator commands and the dashboard show, built from a
node's state. Reading only: nothing here changes the node."""

from __future__ import annotations

from typing import Any

from chatterd.core import wire
from chatterd.core.chatter_rs import ChatterRs
from chatterd.core.node import Node
from chatterd.role_reasons import why_not_here


def member_rows(node: Node, now: float) -> list[dict[str, Any]]:
    rows = []
    for m in sorted(node.table.members.values(), key=lambda m: m.name):
        heard = 0.0 if m.name == node.name else (None if m.last_heard is None else now - m.last_heard)
        rows.append(
            {
                "name": m.name,
                "id": m.id,
                "addr": wire.format_addr(m.addr),
                "state": str(m.state),
                "incarnation": m.inc,
                "last_heard_s": None if heard is None else round(heard, 3),
                "state_since_s": round(now - m.since, 3),
                "tags": dict(m.tags),
            }
        )
    return rows


def device_rows(node: Node) -> list[dict[str, Any]]:
    """chatter-rs's device table (empty under another delegate)."""
    if not isinstance(node.delegate, ChatterRs):
        return []
    return [
        {"origin": r.origin, "name": r.name, "description": r.description, "metrics": r.metrics}
        for r in sorted(node.delegate.devices.present(), key=lambda r: (r.origin, r.name))
    ]


def role_rows(node: Node, now: float) -> list[dict[str, Any]]:
    election = node.election
    book = election.roles
    cands = election.candidates(now)
    every: set[str] = set(book.claims) | set(cands)
    for c in election.role_members.values():
        every |= set(c)
    rows = []
    for role in sorted(every):
        claim = book.claims.get(role)
        holder = node.table.members.get(claim.holder) if claim else None
        rows.append(
            {
                "role": role,
                "holder": claim.holder if claim else None,
                "epoch": claim.epoch if claim else 0,
                "since": claim.ts / 1000 if claim else None,
                "holder_state": str(holder.state) if holder else None,
                "candidates": dict(sorted(cands.get(role, {}).items(), key=lambda kv: (-kv[1], kv[0]))),
                "held_here": role in book.held,
                "waiting_for_lock": role in book.pending,
                "why_not_here": why_not_here(node, role, cands.get(role, {})),
            }
        )
    return rows
