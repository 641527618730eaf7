"""``--lease-ttl SECONDS``: the application keeps each role of its node on offer by renewing a
lease through the API, ``POST /v1/roles/NAME/lease`` (or ``POST /v1/roles/lease`` for every
role of the node).

With --run chatterd knows the application's process exists; only the application knows it
works. With a lease, each ``--role`` of the node is offered only while its lease is fresh:
until the first renewal, and from the moment a lease runs out (the application died, hung,
or lost what it needs to do the job), the node withholds that role alone (core:
Election.hold_role), and the cluster elects another holder. A renewal gives TTL seconds;
renew every TTL/3 so that one late or lost renewal does not move the role. Expiry is checked
every min(TTL/10, MAX_CHECK_PERIOD) seconds, so a role is released within TTL + TTL/10 of
the last renewal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import structlog
import trio

log = structlog.get_logger("chatterd.leases")

MAX_CHECK_PERIOD = 0.1
NO_LEASE = "no lease yet"
EXPIRED = "lease expired"


class UnknownRole(KeyError):
    """A renewal for a role this node is not a candidate for (the API answers 404)."""


class Leases:
    """The lease of each role: when it runs out; withholds (``hold(role, reason)``) a role
    whose lease is missing or expired and offers it again (``hold(role, None)``) on renewal."""

    def __init__(self, roles: Iterable[str], ttl: float, hold: Callable[[str, str | None], None]) -> None:
        self.ttl = ttl
        self.hold = hold
        self.expires: dict[str, float | None] = {role: None for role in roles}  # None: withheld
        self.renewals = 0
        self.expiries = 0

    @property
    def period(self) -> float:
        return min(self.ttl / 10, MAX_CHECK_PERIOD)

    def hold_all(self) -> None:
        """At start: every role withheld until its first renewal."""
        for role in self.expires:
            self.hold(role, NO_LEASE)

    def renew(self, role: str, now: float) -> list[str]:
        """Renew ``role``'s lease for TTL seconds from ``now``; [role] (raises UnknownRole)."""
        if role not in self.expires:
            raise UnknownRole(role)
        was = self.expires[role]
        self.expires[role] = now + self.ttl
        self.renewals += 1
        if was is None:
            log.info("lease_renewed", role=role, ttl_s=self.ttl, offered_again=True)
            self.hold(role, None)
        return [role]

    def renew_all(self, now: float) -> list[str]:
        for role in self.expires:
            self.renew(role, now)
        return list(self.expires)

    def expire(self, now: float) -> list[str]:
        """Withhold every role whose lease ran out by ``now``; the roles withheld."""
        out = [role for role, end in self.expires.items() if end is not None and now >= end]
        for role in out:
            self.expires[role] = None
            self.expiries += 1
            log.warning("lease_expired", role=role, ttl_s=self.ttl)
            self.hold(role, EXPIRED)
        return out

    def expires_in(self, role: str, now: float) -> float:
        end = self.expires[role]
        return 0.0 if end is None else max(0.0, end - now)

    async def run(self) -> None:
        """Check the leases on a timer, for the life of the node."""
        while True:
            self.expire(trio.current_time())
            await trio.sleep(self.period)


def lease_answer(leases: Leases, role: str, held: dict[str, int], now: float) -> dict[str, Any]:
    """The API's answer for one renewed role: its lease, and whether this node holds it
    (``held``: role → epoch of the roles held here)."""
    out: dict[str, Any] = {
        "role": role,
        "ttl": leases.ttl,
        "expires_in": round(leases.expires_in(role, now), 3),
        "held_here": role in held,
    }
    if role in held:
        out["epoch"] = held[role]
    return out
