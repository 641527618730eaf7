"""Whether a node is healthy, and why not (GET /v1/health).

A node is ``ok`` unless one of these holds, each giving one reason:

- it is leaving;
- it has seeds and none has answered yet (not joined);
- its own timers ran late (node.stats["starved"] went up) in the last ``RECENT_S`` seconds;
- it knows no other live member but knows dead ones: isolated, or the cluster is gone;
- internal errors (exceptions in the protocol core, a bug) were counted in the last
  ``RECENT_S`` seconds, as far as the health checks and scrapes that saw the counter go up
  can tell.

Everything here is O(members) with small constants: cheap enough to poll every second.
This module imports nothing heavy: the runtime imports it before its first datagram.
"""

from __future__ import annotations

from typing import Any

from chatterd.core import wire
from chatterd.core.membership import LIVE, MemberState
from chatterd.core.node import Node

STATES = tuple(s.value for s in MemberState)
RECENT_S = 60.0  # a starvation or an internal error makes the node degraded for this long


def member_counts(node: Node) -> dict[str, int]:
    """Members by state, this node included, in one pass over the table."""
    counts = dict.fromkeys(STATES, 0)
    for m in node.table.members.values():
        counts[m.state] += 1
    return counts


class RecentIncrease:
    """When a counter was last seen going up, from the values passed to ``update``."""

    def __init__(self) -> None:
        self.value = 0
        self.at: float | None = None

    def update(self, value: int, now: float) -> bool:
        """Record the counter's current value; whether it went up less than RECENT_S ago."""
        if value != self.value:
            self.value = value
            self.at = now
        return self.at is not None and now - self.at < RECENT_S


class HealthWatch:
    """What the health check of one runtime remembers between calls."""

    def __init__(self) -> None:
        self.internal_errors = RecentIncrease()

    def reasons(self, node: Node, counts: dict[str, int], internal_errors: int, now: float) -> list[str]:
        """Why ``node`` is not healthy at ``now`` (its monotonic clock); empty when it is."""
        reasons = []
        if node.leaving:
            reasons.append("leaving")
        if not node.joined:  # seeds given (addresses, or names not resolved yet) and none answered
            reasons.append("not yet joined: no seed has answered")
        if node.starved_at is not None and now - node.starved_at < RECENT_S:
            reasons.append(
                f"timers starved: ran late {now - node.starved_at:.0f} s ago"
                f" ({node.stats['starved']} times since start)"
            )
        own = node.table.members[node.name].state
        others_live = counts["alive"] + counts["suspect"] - (own in LIVE)
        if not node.leaving and others_live == 0 and counts["dead"] > 0:
            reasons.append(f"isolated: no other live member, {counts['dead']} dead")
        if node.failing is not None:
            reasons.append(node.failing)
        if self.internal_errors.update(internal_errors, now):
            reasons.append(
                f"internal errors: {internal_errors} since start, new ones seen in the last {RECENT_S:.0f} s"
            )
        return reasons

    def report(
        self, node: Node, counters: dict[str, int], internal_errors: int, uptime: float, now: float
    ) -> dict[str, Any]:
        """GET /v1/health's body (without the security fields): status, reasons, identity."""
        counts = member_counts(node)
        reasons = self.reasons(node, counts, internal_errors, now)
        return {
            "status": "degraded" if reasons else "ok",
            "reasons": reasons,
            "name": node.name,
            "id": node.id,
            "addr": wire.format_addr(node.addr),
            "incarnation": node.inc,
            "tags": node.tags,
            "roles_held": {role: c.epoch for role, c in sorted(node.roles.held.items())},
            "members": counts,
            "uptime_s": round(uptime, 3),
            "counters": counters,
            "now": now,
        }
