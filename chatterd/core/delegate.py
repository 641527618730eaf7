"""The application's part of the protocol, behind one interface (memberlist's Delegate).

The protocol core spreads rumors, keeps members and syncs state; what a rumor's payload
*means* is the delegate's business: which payloads are valid, what delivering one does, and
what application state rides along in push-pull anti-entropy. chatter-rs's devices and view
gossip are one delegate (core/chatter_rs.py); the core knows nothing of their kinds.

A delegate reaches back into the cluster only through :class:`Cluster`.
"""

from __future__ import annotations

from typing import Any, Protocol

from chatterd.core import wire

Addr = tuple[str, int]


class PayloadError(ValueError):
    """A payload the delegate refuses: the reason is said to whoever sent it."""


class Cluster(Protocol):
    """What a delegate may ask of the node it runs in."""

    def knows_addr(self, addr: Addr) -> bool:
        """Is some member (in any state) at this address?"""
        ...

    def join(self, addr: Addr) -> None:
        """Ask the node at ``addr`` to let us in (or to join us)."""
        ...

    def forget(self, member_id: str, now: float) -> None:
        """Mark the suspect or dead member with this id as left, cluster-wide."""
        ...


class Delegate(Protocol):
    def validate(self, payload: Any) -> None:
        """Raise :class:`PayloadError` if ``payload`` may not be spread."""
        ...

    def kind(self, payload: dict[str, Any]) -> str:
        """The payload's event kind (a counter key and the Delivery event's kind)."""
        ...

    def deliver(self, rumor: wire.Rumor, kind: str, now: float) -> None:
        """A rumor is delivered here, once; apply it to the application's state."""
        ...

    def state_records(self, buckets: set[int] | None) -> list[bytes]:
        """Encoded records of the application's state, all or those in some digest buckets."""
        ...

    def merge_state(self, records: list[wire.DeviceRecord], now: float) -> None:
        """Records from a peer's push-pull State chunk."""
        ...

    def expire(self, now: float) -> None:
        """Periodic clean-up (every reconnect interval)."""
        ...
