"""What every mechanism of one node shares: its configuration, its own identity, the member
table and ring, the anti-entropy digest, its random generator, and its effects (outbox,
events, counters, logger). memberlist keeps these in one struct whose concerns are spread
over files; here each mechanism is a :class:`Part` built on one :class:`Context`."""

from __future__ import annotations

import random
from dataclasses import dataclass

from chatterd.core.config import Config
from chatterd.core.digest import Digest
from chatterd.core.effects import Effects
from chatterd.core.local import Local
from chatterd.core.membership import MemberTable
from chatterd.core.ring import Ring


@dataclass(frozen=True, slots=True)
class Context:
    cfg: Config
    local: Local
    table: MemberTable
    ring: Ring
    digest: Digest
    rng: random.Random
    fx: Effects


class Part:
    """One mechanism of a node, with the shared context at hand."""

    def __init__(self, ctx: Context) -> None:
        self.cfg = ctx.cfg
        self.local = ctx.local
        self.table = ctx.table
        self.ring = ctx.ring
        self.digest = ctx.digest
        self.rng = ctx.rng
        self.fx = ctx.fx
