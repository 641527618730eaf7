"""The bounded integer types of the wire (core/wire.py) and of role claims (core/roles.py),
and the nesting depth of a payload.

Every integer a peer sends is 0..2^63-1 (epochs 1..2^63-1): msgspec rejects anything else
while decoding, so an out-of-range value is a malformed datagram, dropped and counted before
any handler sees it.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from chatterd.core.config import WIRE_INT_MAX

U63 = Annotated[int, msgspec.Meta(ge=0, le=WIRE_INT_MAX)]
Epoch = Annotated[int, msgspec.Meta(ge=1, le=WIRE_INT_MAX)]


def saturate(value: int) -> int:
    """``value`` held to the wire's range: what we compute from a peer's numbers (one above
    its incarnation, epoch or Lamport time) must still encode."""
    return min(max(value, 0), WIRE_INT_MAX)


def depth(value: Any, limit: int = 1000) -> int:
    """Nesting depth of a decoded JSON value (iterative: safe on hostile input)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            deepest = max(deepest, d)
            if d < limit:
                stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            deepest = max(deepest, d)
            if d < limit:
                stack.extend((x, d + 1) for x in v)
    return deepest
