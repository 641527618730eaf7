"""Roles: which member holds each role, and the epoch (fencing token) of each holder.

A node is a candidate for a role when it carries the tag ``role:NAME`` = ``PRIORITY``
(``chatterd --role NAME:PRIORITY``); candidacies thus travel with membership. Every node runs
the same election over the members it believes alive:

* the current holder keeps the role while it is an alive candidate and no candidate has a
  strictly higher priority (equal priorities never hand the role back and forth);
* otherwise the candidate with the highest priority wins, ties going to the highest name:
  the bully algorithm's outcome, without its messages.

Only the winner acts: it *claims* the role with an epoch one above the highest it knows (or
with a lock service's revision, see runtime), and gossips the claim. Claims are ordered by
epoch, then by holder name, so every node keeps the same best claim whatever the order of
arrival, and the epoch of a role only ever grows. A holder that sees a better claim by
another node, or stops winning the election (it failed a check, lost quorum, or a higher
priority candidate came), releases the role. Downstream systems fence with the epoch: they
refuse work stamped with an epoch lower than the highest they have seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

TAG_PREFIX = "role:"
FAILING_TAG = "check"  # tag set to "failing" while the node's --check fails (roles withdrawn)


class Claim(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """'``holder`` holds ``role`` from epoch ``epoch``' (``ts``: its wall clock, Unix ms)."""

    role: str
    holder: str
    epoch: int
    ts: int


class RoleError(ValueError):
    pass


def parse_role(text: str) -> tuple[str, int]:
    """'NAME[:PRIORITY]' → (NAME, PRIORITY); priority defaults to 0."""
    name, sep, prio = text.partition(":")
    name = name.strip()
    if not name or any(c.isspace() or c in ":=," for c in name):
        raise RoleError(f"invalid role {text!r}: expected NAME[:PRIORITY]")
    if not sep:
        return name, 0
    try:
        return name, int(prio)
    except ValueError:
        raise RoleError(f"invalid role priority in {text!r}: expected an integer") from None


def role_tags(roles: Mapping[str, int]) -> dict[str, str]:
    return {TAG_PREFIX + name: str(prio) for name, prio in roles.items()}


def candidacies(tags: Mapping[str, str]) -> dict[str, int]:
    """The roles a member's tags make it a candidate for (malformed priorities ignored)."""
    out: dict[str, int] = {}
    for key, value in tags.items():
        if key.startswith(TAG_PREFIX):
            try:
                out[key[len(TAG_PREFIX) :]] = int(value)
            except ValueError:
                continue
    return out


def better(a: Claim, b: Claim | None) -> bool:
    """Does claim ``a`` supersede ``b``? Higher epoch first, then the higher holder name."""
    return b is None or (a.epoch, a.holder) > (b.epoch, b.holder)


def elect(candidates: Mapping[str, int], current: Claim | None) -> str | None:
    """The holder every node computes from the same candidates (name → priority) and claim."""
    if not candidates:
        return None
    best, best_prio = max(candidates.items(), key=lambda kv: (kv[1], kv[0]))
    if current is not None and current.holder in candidates and candidates[current.holder] >= best_prio:
        return current.holder
    return best


def candidates_by_role(members: Iterable[tuple[str, Mapping[str, str]]]) -> dict[str, dict[str, int]]:
    """role → {candidate name: priority} over (name, tags) of the members to consider."""
    out: dict[str, dict[str, int]] = {}
    for name, tags in members:
        for role, prio in candidacies(tags).items():
            out.setdefault(role, {})[name] = prio
    return out
