"""Balanced roles: many roles spread evenly over their candidates, moving as few as possible.

A node declares a group of balanced roles with one tag, ``roles:shard-0..15`` = ``PRIORITY``
(``chatterd --roles shard-0..15``): it is a candidate for shard-0 ... shard-15. Plain roles
(``--role``) go to the best candidate and stay there (core/roles.py); balanced roles are
spread so that each candidate holds about R/N of them, and every node computes the same
assignment from the same candidates and claims.

For each role only its top-priority candidates compete (priorities are tiers, as for plain
roles). Over them, with R roles and N candidates, ``q = R // N`` and ``rem = R % N``: a
balanced assignment gives ``q`` roles to every candidate and one more to ``rem`` of them.
:func:`assign` reaches one while keeping as many current holders as it can:

1. each current holder keeps up to ``q`` of its roles (those it ranks highest);
2. up to ``rem`` holders with more keep one more;
3. every other role goes to its least-loaded candidate, ties broken by rendezvous rank
   (a hash of role and candidate), so a cold start spreads the roles evenly too.

A claim that already is balanced is kept as it is (a fixed point: nothing moves without a
change of candidates). When a candidate dies, only its roles move; when one joins, it takes
its ``q`` roles, one from each of the most loaded: close to the minimum number of moves.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping

GROUP_PREFIX = "roles:"
MAX_GROUP_SIZE = 256  # roles one range may name: a tag cannot make a node elect a million roles
# Balanced roles one member may be a candidate for, all groups together. Every node assigns
# them all whenever a candidacy changes: 256 roles over 64 candidates take ~35 ms of one core
# (1,024 took ~0.2 s, a stall of every node's event loop at each change).
MAX_MEMBER_ROLES = 256


class GroupError(ValueError):
    pass


def parse_range(spec: str) -> list[str]:
    """'shard-0..15' → ['shard-0', ..., 'shard-15']; raises GroupError."""
    head, sep, last = spec.rpartition("..")
    prefix = head.rstrip("0123456789")
    first = head[len(prefix) :]
    if not sep or not first or not last.isdigit() or not prefix:
        raise GroupError(f"invalid role range {spec!r}: expected PREFIXA..B, e.g. shard-0..15")
    if any(c.isspace() or c in ":=," for c in prefix):
        raise GroupError(f"invalid role range {spec!r}: the prefix must not contain ':', '=', ',' or spaces")
    lo, hi = int(first), int(last)
    if hi < lo:
        raise GroupError(f"invalid role range {spec!r}: {hi} is below {lo}")
    if hi - lo + 1 > MAX_GROUP_SIZE:
        raise GroupError(f"invalid role range {spec!r}: {hi - lo + 1} roles, over the {MAX_GROUP_SIZE} limit")
    return [f"{prefix}{i}" for i in range(lo, hi + 1)]


def parse_group(text: str) -> tuple[str, int]:
    """'shard-0..15[:PRIORITY]' → ('shard-0..15', PRIORITY); raises GroupError."""
    spec, sep, prio = text.partition(":")
    parse_range(spec.strip())
    if not sep:
        return spec.strip(), 0
    try:
        return spec.strip(), int(prio)
    except ValueError:
        raise GroupError(f"invalid role priority in {text!r}: expected an integer") from None


def group_tags(groups: Mapping[str, int]) -> dict[str, str]:
    return {GROUP_PREFIX + spec: str(prio) for spec, prio in groups.items()}


def group_candidacies(tags: Mapping[str, str]) -> dict[str, int]:
    """The balanced roles a member's ``roles:`` tags make it a candidate for (malformed or
    oversized groups are ignored, and at most MAX_MEMBER_ROLES roles are taken)."""
    out: dict[str, int] = {}
    for key, value in tags.items():
        if not key.startswith(GROUP_PREFIX):
            continue
        try:
            names, prio = parse_range(key[len(GROUP_PREFIX) :]), int(value)
        except ValueError:
            continue
        if len(out) + len(names) > MAX_MEMBER_ROLES:
            break
        out |= dict.fromkeys(names, prio)
    return out


def rank(role: str, candidate: str) -> int:
    """The rendezvous rank of a candidate for a role: the same on every node and run."""
    digest = hashlib.blake2b(f"{role}\0{candidate}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _order(role: str, holder: str) -> tuple[int, str]:
    """A holder's roles, those it ranks highest first."""
    return -rank(role, holder), role


def _tiers(roles: Mapping[str, Mapping[str, int]]) -> dict[str, list[str]]:
    """role → its top-priority candidates, best rendezvous rank first."""
    out: dict[str, list[str]] = {}
    for role, cands in roles.items():
        if cands:
            top = max(cands.values())
            out[role] = sorted((c for c, p in cands.items() if p == top), key=lambda c: (-rank(role, c), c))
    return out


def assign(roles: Mapping[str, Mapping[str, int]], holders: Mapping[str, str]) -> dict[str, str]:
    """role → the candidate that should hold it, from role → {alive candidate: priority} and
    role → its current holder (the claims). Roles without candidates are left out."""
    tiers = _tiers(roles)
    nodes = {c for tier in tiers.values() for c in tier}
    if not nodes:
        return {}
    q, rem = divmod(len(tiers), len(nodes))
    load = dict.fromkeys(nodes, 0)
    out: dict[str, str] = {}
    kept: dict[str, list[str]] = {}
    for role, tier in tiers.items():
        holder = holders.get(role)
        if holder is not None and holder in tier:
            kept.setdefault(holder, []).append(role)
    extras: list[tuple[int, str, str]] = []  # (rank, holder, role): step 2's choices
    for holder, mine in sorted(kept.items()):
        mine.sort(key=functools.partial(_order, holder=holder))
        for role in mine[:q]:
            out[role] = holder
        load[holder] = len(mine[:q])
        if len(mine) > q:
            extras.append((rank(mine[q], holder), holder, mine[q]))
    for _, holder, role in sorted(extras, reverse=True)[:rem]:
        out[role] = holder
        load[holder] += 1
    for role in sorted(tiers, key=lambda r: (rank(r, ""), r)):
        if role not in out:
            best = min(tiers[role], key=lambda c: (load[c], -rank(role, c), c))
            out[role] = best
            load[best] += 1
    return out
