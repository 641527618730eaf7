"""The protocol loop: the shell between the node's UDP socket and the sans-IO core.

It sleeps until the core's next deadline or until the socket is readable, drains the
datagrams waiting in the socket (so a stalled loop reads the heartbeats that queued up before
it judges anyone), runs the due timers, and sends what the core produced; the core's events
go to the runtime (``Runtime._record``), its lock requests to the role lock.

One cancel scope lasts until its deadline comes or ``kick()`` cuts it short (the API gave the
core work): a turn for a datagram only moves the deadline, when it changed. That is most of
an idle node's turns, and a new scope per turn was a measurable share of an idle node's CPU
(issue #13, docs/benchmarks.md). Timers that raise make the loop pause, growing, rather than
spin, and end the node when they keep failing (chatterd.loopguard).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
import trio

from chatterd import udp
from chatterd.core import wire

if TYPE_CHECKING:
    from chatterd.core.node import Node
    from chatterd.runtime import Runtime

log = structlog.get_logger("chatterd.runtime")

# Datagrams read per turn of the loop before the timers run. Under overload an unbounded drain
# would never reach them: no heartbeats, no forwarding, and the node would count itself starved.
DRAIN_BATCH = 64


class ProtocolLoop:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.sleep: trio.CancelScope | None = None  # the wait, cut short by kick()
        self.pause = 0.0  # after timers that raised: how long to pause (chatterd.loopguard)

    def kick(self) -> None:
        """Wake the loop now: the core has work from outside the socket."""
        if self.sleep is not None:
            self.sleep.cancel()

    async def run(self) -> None:
        sock = self.rt.sock
        assert sock is not None
        wake = self.turn(drain=False)
        while True:
            if wake is None:  # the timers raised: pause rather than spin
                await trio.sleep(self.pause)
                wake = self.turn(drain=True)
                continue
            with trio.CancelScope(deadline=wake) as self.sleep:
                while wake is not None:
                    await trio.lowlevel.wait_readable(sock)
                    wake = self.turn(drain=True)
                    if wake is not None and wake != self.sleep.deadline:
                        self.sleep.deadline = wake
            self.sleep = None
            if wake is not None:  # the deadline came, or kick()
                wake = self.turn(drain=True)

    def turn(self, drain: bool) -> float | None:
        """The datagrams waiting (a bounded batch), the timers, the sends: when to wake next,
        or None if the timers raised (``pause`` says for how long)."""
        rt = self.rt
        node = rt.node
        assert node is not None
        now = trio.current_time()
        if drain:
            now = self.drain(node, now)
        try:
            wake = node.handle_timers(now)
        except Exception:
            rt.stats["internal_errors"] += 1
            self.pause = rt.timers_guard.failed()  # raises LoopFailed when it keeps failing
            self.pump()
            return None
        rt.timers_guard.ok()
        self.pump()
        return wake

    def drain(self, node: Node, now: float) -> float:
        """Feed the core what the socket holds, DRAIN_BATCH datagrams at most; the time after."""
        rt = self.rt
        sock = rt.sock
        assert sock is not None
        bufsize = node.cfg.max_receive + 1
        wirelog = rt.wirelog if rt.wirelog.on else None
        for _ in range(DRAIN_BATCH):
            try:
                data, addr = sock.recvfrom(bufsize)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # e.g. ICMP port unreachable surfacing on Linux
                log.debug("recv_error", error=str(e))
                continue
            now = trio.current_time()
            src = udp.from_socket(addr)
            if wirelog is not None:
                wirelog.received(data, src)
            try:
                node.receive(data, src, now)
            except Exception:
                rt.stats["internal_errors"] += 1
                rt.receive_guard.failed(src=wire.format_addr(src))
        return now

    def pump(self) -> None:
        """Send what the core produced, pass on its lock requests, record its events."""
        rt = self.rt
        node, sock = rt.node, rt.sock
        assert node is not None and sock is not None
        wirelog = rt.wirelog
        for data, addr in node.take_outgoing():
            if wirelog.on:
                wirelog.sent(data, addr)
            try:
                sock.sendto(data, udp.to_socket(sock, addr))
            except OSError as e:
                rt.stats["send_errors"] += 1
                log.debug("send_failed", dest=wire.format_addr(addr), error=str(e))
        if rt.lock is not None:
            for action, role in node.take_lock_requests():
                if action == "want":
                    rt.lock.want(role)
                else:
                    rt.lock.unwant(role)
        for ev in node.take_events():
            rt._record(ev)
