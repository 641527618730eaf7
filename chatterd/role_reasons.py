"""Why this node does not hold a role: one line for ``why_not_here`` in GET /v1/roles, the
dashboard's roles table and ``chatterd roles``.

The election (core/roles.py's RoleBook) records a reason only for roles this node is a live
candidate for and loses ("held by n2", "no quorum: ..."). A reader also wants to know why a
node that is *not* a candidate does not hold the role: its candidacy was withdrawn (a failing
--check, an application's lease ran out), it never was one, it is leaving, or it has not
started electing yet. Reading only: nothing here changes the node.
"""

from __future__ import annotations

from collections.abc import Mapping

from chatterd.core.balance import GROUP_PREFIX, GroupError, parse_range
from chatterd.core.node import Node
from chatterd.core.roles import TAG_PREFIX

HELD_BY = "held by "  # the RoleBook's reason when another candidate wins


def why_not_here(node: Node, role: str, candidates: Mapping[str, int]) -> str | None:
    """Why ``node`` does not hold ``role`` (None when it does), given the role's live
    candidates (name → priority, as the election sees them now)."""
    election = node.election
    book = election.roles
    if role in book.held:
        return None
    if role in book.pending:
        return "elected here: waiting for the lock"
    if node.leaving:
        return "leaving the cluster"
    recorded = book.why_not.get(role)
    if recorded is not None:
        if role in election.balanced_of.get(node.name, ()) and recorded.startswith(HELD_BY):
            return f"{recorded} (balanced)"
        return _with_priorities(recorded, node.name, candidates)
    if node.failing is not None:
        return f"candidacy withdrawn: {node.failing}"
    hold = _hold_on(election.holds, role)
    if hold is not None:
        return f"candidacy withdrawn: {hold}"
    if role in election.role_members.get(node.name, {}):
        return None if election.ready else "not electing yet: learning the current claims first (role_settle)"
    return f"not a candidate: this node was not started with --role {role}"


def _hold_on(holds: Mapping[str, str], role: str) -> str | None:
    """The reason this node withholds its candidacy for ``role`` alone (its lease ran out), if any."""
    if TAG_PREFIX + role in holds:
        return holds[TAG_PREFIX + role]
    for key, reason in holds.items():
        if key.startswith(GROUP_PREFIX) and _in_group(role, key[len(GROUP_PREFIX) :]):
            return reason
    return None


def _in_group(role: str, spec: str) -> bool:
    """Is ``role`` one of the roles the range ``spec`` (``shard-0..7``) names?"""
    try:
        return role in parse_range(spec)
    except GroupError:
        return False


def _with_priorities(reason: str, me: str, candidates: Mapping[str, int]) -> str:
    """Add the priorities to "held by n2" ("held by n2: priority 5, ours 1"), or why an equal one does not move it."""
    if not reason.startswith(HELD_BY) or me not in candidates:
        return reason
    winner = reason[len(HELD_BY) :]
    if winner not in candidates:
        return reason
    theirs, ours = candidates[winner], candidates[me]
    if theirs > ours:
        return f"{reason}: priority {theirs}, ours {ours}"
    if theirs == ours:
        return f"{reason}: same priority ({ours}), the holder keeps it"
    return f"{reason}: priority {theirs}, ours {ours}, but it holds the role"
