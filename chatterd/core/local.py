"""The node's own identity: name, id, address, incarnation, tags, and whether it is leaving.

Only the node itself raises its incarnation (SWIM): to refute a suspicion, to announce new
tags, or at start (from the wall clock, so a restart is always ahead of its previous life).
Every mechanism reads these through one shared :class:`Local`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from chatterd.core import tags, wire
from chatterd.core.config import RECORD_ROOM, Config

Addr = tuple[str, int]


class Local:
    def __init__(
        self, name: str, node_id: str, addr: Addr, inc: int, node_tags: dict[str, str], wall_offset: float
    ) -> None:
        self.name = name
        self.id = node_id
        self.addr = addr
        self.inc = inc
        self.tags = node_tags
        self.wall_offset = wall_offset
        self.leaving = False
        self.boot = 0  # start time, Unix ms: names the stream of rumors we originate (core/repair.py)

    def wall(self, now: float) -> float:
        """Unix time at monotonic time ``now``."""
        return now + self.wall_offset

    def wall_ms(self, now: float) -> int:
        return int(self.wall(now) * 1000)

    def alive_msg(self) -> wire.Alive:
        return wire.Alive(node=self.name, id=self.id, addr=wire.format_addr(self.addr), inc=self.inc, tags=self.tags)

    def join_msg(self) -> wire.Join:
        return wire.Join(node=self.name, id=self.id, addr=wire.format_addr(self.addr), inc=self.inc, tags=self.tags)


def check_tags(config: Config, name: str, new: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``new`` if a node called ``name`` can carry these tags, or raise TagsError:
    within the tags' own limit, and small enough that its Alive message and member record
    fit in one datagram of ``config.max_datagram`` bytes."""
    checked = tags.validate(new)
    longest = wire.Alive(node=name, id=str(uuid.UUID(int=0)), addr="255.255.255.255:65535", inc=2**63, tags=checked)
    size = len(wire.encode_message(longest)) + RECORD_ROOM
    limit = wire.max_message_size(config.max_datagram)
    if size > limit:
        raise tags.TagsError(
            f"tags too big for {config.max_datagram}-byte datagrams: "
            f"the node's record would take {size} of {limit} bytes"
        )
    return checked
