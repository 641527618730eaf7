"""Roles: which member holds each role, and the epoch (fencing token) of each holder.

A node is a candidate for a role when it carries the tag ``role:NAME`` = ``PRIORITY``
(``chatterd --role NAME:PRIORITY``); candidacies thus travel with membership. Every node runs
the same election over the members it believes alive:

* the current holder keeps the role while it is an alive candidate and no candidate has a
  strictly higher priority (equal priorities never hand the role back and forth);
* otherwise the candidate with the highest priority wins, ties going to the highest name:
  the bully algorithm's outcome, without its messages.

Balanced roles (tag ``roles:PREFIXA..B``, ``chatterd --roles``) are instead spread evenly over
their top-priority candidates by core/balance.py.

Only the winner acts: it *claims* the role with an epoch one above the highest it knows (or
with a lock service's revision, see runtime), and gossips the claim. Claims are ordered by
epoch, then by holder name, so every node keeps the same best claim whatever the order of
arrival, and the epoch of a role only ever grows. A holder that sees a better claim by
another node, or stops winning the election (it failed a check, lost quorum, or a higher
priority candidate came), releases the role. Downstream systems fence with the epoch: they
refuse work stamped with an epoch lower than the highest they have seen.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from chatterd.core.balance import GROUP_PREFIX, assign, group_candidacies
from chatterd.core.bounds import U63, Epoch, saturate

TAG_PREFIX = "role:"
FAILING_TAG = "check"  # tag set to "failing" while the node's --check fails (roles withdrawn)


class Claim(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """'``holder`` holds ``role`` from epoch ``epoch``' (``ts``: its wall clock, Unix ms)."""

    role: str
    holder: str
    epoch: Epoch
    ts: U63


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


def is_candidacy(tag: str) -> bool:
    """Is this tag key a candidacy (``role:NAME`` or a balanced group ``roles:SPEC``)?"""
    return tag.startswith(TAG_PREFIX) or tag.startswith(GROUP_PREFIX)


def balanced(tags: Mapping[str, str]) -> set[str]:
    """The roles a member's tags declare balanced (its ``roles:`` groups)."""
    return set(group_candidacies(tags)) if any(k.startswith(GROUP_PREFIX) for k in tags) else set()


def candidacies(tags: Mapping[str, str]) -> dict[str, int]:
    """The roles a member's tags make it a candidate for (malformed priorities ignored)."""
    out: dict[str, int] = group_candidacies(tags) if any(k.startswith(GROUP_PREFIX) for k in tags) else {}
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


class RoleBook:
    """One node's view of the roles: the best claim known for each, the roles it holds, and
    (with a lock service) the roles it waits for. Pure bookkeeping: the Node feeds it the
    members and the claims it hears, and turns its answers into messages and events."""

    def __init__(self, name: str, expect: int | None = None, gated: bool = False) -> None:
        self.name = name
        self.expect = expect  # hold roles only while >= expect // 2 + 1 members are alive
        self.gated = gated  # a lock service must grant each role (grant()) before we claim it
        self.claims: dict[str, Claim] = {}
        self.held: dict[str, Claim] = {}
        self.pending: set[str] = set()  # gated: elected, waiting for the lock
        self.why_not: dict[str, str] = {}  # role → why we do not hold it although a candidate

    def merge(self, claim: Claim) -> bool:
        """Remember a claim if it supersedes the one we had. Returns True if it did."""
        if not better(claim, self.claims.get(claim.role)):
            return False
        self.claims[claim.role] = claim
        return True

    def quorum(self, alive: int) -> bool:
        return self.expect is None or alive >= self.expect // 2 + 1

    def decide(
        self,
        candidates: Mapping[str, Mapping[str, int]],
        alive: int,
        hold_off: frozenset[str] = frozenset(),
        balanced: frozenset[str] = frozenset(),
    ) -> tuple[list[str], list[tuple[str, str]]]:
        """Given role → {alive candidate: priority} and the number of alive members, which
        roles we should now take (claim, or ask the lock for) and which we must give up, with
        the reason. Roles we hold but that no one is a candidate for any more are given up.
        Roles in ``hold_off`` (claimed by a member we know nothing of yet) are not taken.
        Roles in ``balanced`` are assigned together, spread over their candidates."""
        take: list[str] = []
        drop: list[tuple[str, str]] = []
        has_quorum = self.quorum(alive)
        spread = self.spread(candidates, balanced) if balanced else {}
        for role in sorted(set(candidates) | set(self.held) | self.pending):
            cands = candidates.get(role, {})
            current = self.claims.get(role)
            winner = spread.get(role) if role in balanced else elect(cands, current)
            mine = role in self.held or role in self.pending
            if winner == self.name and has_quorum:
                if role in hold_off and not mine:
                    self.why_not[role] = f"learning about holder {current.holder if current else '?'} first"
                    continue
                self.why_not.pop(role, None)
                if not mine:
                    take.append(role)
                continue
            if mine and has_quorum and self.name in cands and role in balanced and not self.gated:
                # A balanced role moving to another live candidate: hand it over, keep it
                # until the winner's claim supersedes ours, so the role is never unheld.
                self.why_not.pop(role, None)
                continue
            if self.name in cands:
                self.why_not[role] = (
                    f"no quorum: {alive} of {self.expect} members alive" if not has_quorum else f"held by {winner}"
                )
            else:
                self.why_not.pop(role, None)
            if mine:
                if self.name not in cands:
                    reason = "no longer a candidate"
                elif not has_quorum:
                    reason = f"lost quorum: {alive} of {self.expect} members alive"
                else:
                    reason = f"{winner} wins the election"
                drop.append((role, reason))
        return take, drop

    def spread(self, candidates: Mapping[str, Mapping[str, int]], balanced: frozenset[str]) -> dict[str, str]:
        """The balanced roles' holders, from their candidates and current claims."""
        claims = self.claims
        holders = {r: claims[r].holder for r in balanced if r in claims}
        return assign({r: candidates[r] for r in balanced if r in candidates}, holders)

    def superseded(self, claim: Claim) -> bool:
        """A better claim by someone else for a role we hold: we lost it."""
        mine = self.held.get(claim.role)
        return mine is not None and claim.holder != self.name and better(claim, mine)

    def next_epoch(self, role: str) -> int:
        current = self.claims.get(role)
        return 1 if current is None else saturate(current.epoch + 1)
