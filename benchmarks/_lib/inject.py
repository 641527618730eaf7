"""Messages into chatterd, and what became of them.

``chatter_inject`` runs the ``chatter-inject`` command. ``Injector`` speaks its protocol for many
messages at once over one UDP socket: an ``inject`` datagram with a request id, resent every
``retry`` seconds until its InjectAck (or InjectNack), given up after ``give_up`` seconds.
``tally`` counts the event rows of the accepted messages per node, with their latencies.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from chatterd.core import wire
from chatterd.core.config import ENCRYPT_KEY_ENV
from chatterd.testing import HOST, LocalNode

Rows = Sequence[tuple[str, dict[str, Any]]]  # (observer, event row)


async def chatter_inject(
    addr: str, body: str, encrypt: str | None = None, label: str = ""
) -> subprocess.CompletedProcess[bytes]:
    """``chatter-inject ADDR BODY`` (this Python's), output captured; sealed with ``encrypt``
    (a base64 key, given through $CHATTER_ENCRYPT_KEY, not the command line) and ``label``."""
    env = {k: v for k, v in os.environ.items() if k != ENCRYPT_KEY_ENV}
    if encrypt is not None:
        env[ENCRYPT_KEY_ENV] = encrypt
    return await trio.run_process(
        [sys.executable, "-m", "chatter_inject", addr, body, *(["--label", label] if label else [])],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
    )


@dataclass
class Injected:
    rid: str
    node: LocalNode
    data: bytes
    first_sent: float = 0.0
    last_sent: float = 0.0
    tries: int = 0
    mid: str | None = None
    acked_at: float | None = None
    accepted_by: str | None = None
    error: str | None = None


class Injector:
    """chatter-inject's protocol for many messages at once over one UDP socket: an ``inject``
    datagram with a request id, resent every ``retry`` seconds until its InjectAck (or Nack)."""

    def __init__(self, retry: float = 0.5, give_up: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        self.retry = retry
        self.give_up = give_up
        self.by_rid: dict[str, Injected] = {}
        self.pending: dict[str, Injected] = {}
        self.sends = 0

    def close(self) -> None:
        self.sock.close()

    @staticmethod
    def prepare(node: LocalNode, payload: dict[str, Any]) -> Injected:
        """Built ahead of time, so the sending loop only sends."""
        rid = uuid.uuid4().hex
        return Injected(rid, node, wire.encode([wire.Inject(rid=rid, payload=payload)]))

    def send(self, inj: Injected) -> None:
        inj.first_sent = inj.last_sent = time.monotonic()
        self.by_rid[inj.rid] = inj
        self.pending[inj.rid] = inj
        self._sendto(inj)

    def _sendto(self, inj: Injected) -> None:
        self.sends += 1
        inj.tries += 1
        with contextlib.suppress(OSError):  # a full buffer: the resend covers it
            self.sock.sendto(inj.data, (HOST, inj.node.port))

    async def receive(self) -> None:
        while True:
            await trio.lowlevel.wait_readable(self.sock)
            while True:
                try:
                    reply = self.sock.recv(65_536)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    continue
                self._on_reply(reply)

    def _on_reply(self, reply: bytes) -> None:
        try:
            dgram = wire.decode(reply)
        except wire.WireError:
            return
        now = time.monotonic()
        for msg in dgram.m:
            if isinstance(msg, (wire.InjectAck, wire.InjectNack)):
                inj = self.pending.pop(msg.rid, None)
                if inj is None:
                    continue
                inj.acked_at = now
                if isinstance(msg, wire.InjectAck):
                    inj.mid, inj.accepted_by = msg.id, msg.node
                else:
                    inj.error = msg.error

    async def resend(self) -> None:
        while True:
            await trio.sleep(0.1)
            now = time.monotonic()
            for rid, inj in list(self.pending.items()):
                if now - inj.first_sent > self.give_up:
                    inj.error = f"no acknowledgement within {self.give_up:g} s"
                    del self.pending[rid]
                elif now - inj.last_sent >= self.retry:
                    inj.last_sent = now
                    self._sendto(inj)

    async def send_at_rate(self, prepared: Sequence[Injected], rate: int) -> float:
        """Send the prepared injects at ``rate`` per second; the seconds it took."""
        start = time.monotonic()
        sent = 0
        while sent < len(prepared):
            due = min(len(prepared), int((time.monotonic() - start) * rate) + 1)
            while sent < due:
                self.send(prepared[sent])
                sent += 1
            await trio.sleep(0.001)
        return time.monotonic() - start

    async def send_all(self, prepared: Sequence[Injected], rate: int, sent: Callable[[float], None]) -> None:
        """Send the prepared injects at ``rate`` per second, taking the replies and resending
        meanwhile; ``sent(seconds)`` as soon as the last is sent; then wait (at most give_up + 1 s)
        for the acknowledgements still missing."""
        async with trio.open_nursery() as io_tasks:
            io_tasks.start_soon(self.receive)
            io_tasks.start_soon(self.resend)
            sent(await self.send_at_rate(prepared, rate))
            with trio.move_on_after(self.give_up + 1):
                while self.pending:
                    await trio.sleep(0.05)
            io_tasks.cancel_scope.cancel()

    def accepted(self) -> list[Injected]:
        return [i for i in self.by_rid.values() if i.mid is not None]

    def unacked(self) -> list[Injected]:
        return [i for i in self.by_rid.values() if i.mid is None]


@dataclass
class Tally:
    """The rows of the benchmark's messages, per node, and their latencies."""

    per_node: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    latency: list[float] = field(default_factory=list)
    slowest: dict[str, float] = field(default_factory=dict)
    member_events: Counter[str] = field(default_factory=Counter)
    strays: int = 0


def tally(rows: Rows, mids: dict[str, Injected]) -> Tally:
    """The rows of the messages ``mids`` per node, their latencies; member rows by kind; strays."""
    t = Tally()
    for obs, r in rows:
        if r["kind"].startswith("member-"):
            t.member_events[r["kind"]] += 1
            continue
        if r["id"] not in mids:
            t.strays += 1
            continue
        t.per_node[obs][r["id"]] += 1
        if obs != r["origin"]:
            lat = r["received_at"] - r["sent_at"]
            t.latency.append(lat)
            t.slowest[r["id"]] = max(t.slowest.get(r["id"], 0.0), lat)
    return t


def slowest_pairs(rows: Rows, mids: dict[str, Injected], top: int = 5) -> list[dict[str, Any]]:
    pairs = sorted(
        (
            (r["received_at"] - r["sent_at"], obs, r["id"], r["origin"], r["hops"])
            for obs, r in rows
            if r["id"] in mids and obs != r["origin"]
        ),
        reverse=True,
    )[:top]
    return [
        {"latency": lat, "node": obs, "id": mid, "origin": origin, "hops_left": hops}
        for lat, obs, mid, origin, hops in pairs
    ]


def missing_detail(
    missing: dict[str, int],
    per_node: dict[str, Counter[str]],
    mids: dict[str, Injected],
    rows: Rows,
    limit: int = 10,
) -> list[dict[str, Any]]:
    """For up to ``limit`` missing (message, node) pairs: the origin and the hop budgets left where it arrived."""
    out: list[dict[str, Any]] = []
    for name in sorted(missing):
        for mid, inj in mids.items():
            if per_node.get(name, Counter()).get(mid, 0) == 0:
                hops = sorted((obs, r["hops"]) for obs, r in rows if r.get("id") == mid)
                out.append({"node": name, "id": mid, "accepted_by": inj.accepted_by, "delivered_on": hops})
                if len(out) >= limit:
                    return out
    return out
