"""What a node emits, and the one place it emits it: datagrams to send, events that
happened, counters, and log lines through a logger its shell gives it.

Every mechanism of the core (detector, gossip, sync, repair, election...) writes here;
the shell drains it (``Node.take_outgoing`` / ``take_events``). Nothing in the core logs
through a global logger: the shell passes a factory that turns a target name
(``chatterd.membership``, the RUST_LOG-style filter's key) into a logger bound to the node's
name, and the simulator passes one that adds virtual time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from chatterd.core import wire
from chatterd.core.events import Event

if TYPE_CHECKING:
    from chatterd.core.seal import Sealer

Addr = tuple[str, int]


class Logger(Protocol):
    """The part of a structlog logger the core uses: an event name and keys."""

    def debug(self, event: str, **kw: Any) -> Any: ...
    def info(self, event: str, **kw: Any) -> Any: ...
    def warning(self, event: str, **kw: Any) -> Any: ...


LoggerFactory = Callable[[str], Logger]


class NullLogger:
    """Says nothing: the default of a Node built without a logger (unit tests)."""

    def debug(self, event: str, **kw: Any) -> None:
        pass

    def info(self, event: str, **kw: Any) -> None:
        pass

    def warning(self, event: str, **kw: Any) -> None:
        pass


def null_logger(target: str) -> Logger:
    return NullLogger()


class Effects:
    """The outbox, the event list and the counters of one node."""

    def __init__(self, sender: str, logger: LoggerFactory | None = None, sealer: Sealer | None = None) -> None:
        self.sender = sender
        # With a keyring every datagram leaves sealed (core/seal.py), here and nowhere else:
        # with the key its destination last used towards us, else the one the member says it
        # uses (``member_key``, core/keys.py), else our primary. A node still sending plaintext
        # (the rolling move: not ``outgoing``) seals only its answers to sealed datagrams.
        self.sealer = sealer
        self.member_key: Callable[[Addr], bytes | None] = lambda dest: None
        self.stats: Counter[str] = Counter()
        self._out: list[tuple[bytes, Addr]] = []
        self._events: list[Event] = []
        # No reflection: while a datagram from an address no member has is handled, what goes
        # back to that address may total at most as many bytes as it brought (see guard).
        self._guard_src: Addr | None = None
        self._guard_budget = 0
        make = logger or null_logger
        self.log_wire = make("chatterd.wire")
        self.log_members = make("chatterd.membership")

    def guard(self, src: Addr | None, budget: int = 0) -> None:
        """Hold the answers to ``src`` to ``budget`` bytes in all until the next guard call
        (None: no guard). A datagram over what is left is withheld and counted."""
        self._guard_src, self._guard_budget = src, budget

    def send(self, data: bytes, dest: Addr) -> None:
        sealer = self.sealer
        if sealer is not None:
            kid = sealer.reply_key(dest)
            if kid is not None or sealer.outgoing:
                data = sealer.seal(data, kid if kid is not None else self.member_key(dest))
        if dest == self._guard_src:
            if len(data) > self._guard_budget:
                self.stats["reflection_withheld"] += 1
                self.stats["reflection_withheld_bytes"] += len(data)
                return
            self._guard_budget -= len(data)
        self.stats["datagrams_out"] += 1
        self.stats["bytes_out"] += len(data)
        self._out.append((data, dest))

    def send_msg(self, msg: wire.Message, dest: Addr) -> None:
        """One message in a datagram of its own."""
        self.send(wire.encode([msg], self.sender), dest)

    def emit(self, event: Event) -> None:
        self._events.append(event)

    def drop(self, reason: str, counter: str = "malformed") -> None:
        """Count an input dropped for ``reason``."""
        self.stats[counter] += 1
        self.stats[f"{counter}_{reason}"] += 1

    def take_outgoing(self) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def take_events(self) -> list[Event]:
        ev, self._events = self._events, []
        return ev
