"""The ingest benchmark's traffic: a sender process blasting datagrams at a fixed rate, and fake
peers (member names whose addresses are sockets here that nobody reads) that the node knows."""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

import trio

from benchmarks._lib.feeds import Addr, fake_peers, heartbeat_datagrams, register_datagram, rumor_datagrams
from chatterd.testing import HOST


def blast_datagrams(spec: dict[str, Any]) -> list[bytes]:
    """What one sender sends: new rumors, duplicates of an already sent pool, or heartbeats."""
    peers = [(name, (HOST, port)) for name, port in spec["peers"]]
    total = int(spec["rate"] * spec["seconds"])
    kind = spec["kind"]
    if kind == "new":
        return [d for d, _ in rumor_datagrams(total, 1, peers, payload=spec["payload"], prefix=spec["prefix"])]
    if kind == "dup":
        # The first pool_size datagrams were sent once, slowly, before (spec["pool"]): all seen.
        pool = [d for d, _ in rumor_datagrams(spec["pool"], 1, peers, payload=spec["payload"], prefix=spec["prefix"])]
        return [pool[i % len(pool)] for i in range(total)]
    return [d for d, _ in heartbeat_datagrams(total, peers)]


def blast_worker(spec: dict[str, Any]) -> int:
    """Runs in its own process: send datagrams at a fixed rate from ``start_at`` for ``seconds``;
    prints what it did as one JSON line."""
    target = (spec["host"], spec["port"])
    rate = spec["rate"]
    dgrams = blast_datagrams(spec)
    total = len(dgrams)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    wait = spec["start_at"] - time.time()
    if wait > 0:
        time.sleep(wait)
    errors = 0
    sent = 0
    t0 = time.perf_counter()
    w0 = time.time()
    send = sock.sendto
    while sent < total:
        due = min(total, int((time.perf_counter() - t0) * rate) + 1)
        while sent < due:
            try:
                send(dgrams[sent], target)
            except OSError:
                errors += 1
            sent += 1
        if sent < total:
            time.sleep(0.0002)
    elapsed = time.perf_counter() - t0
    cpu = os.times()
    out = {"sent": sent, "errors": errors, "seconds": elapsed, "started": w0, "late_s": -wait}
    print(json.dumps(out | {"cpu_s": cpu.user + cpu.system}))
    return 0


class FakePeers:
    """Member names whose addresses are bound sockets here that nobody reads."""

    def __init__(self, count: int) -> None:
        self.socks: list[socket.socket] = []
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.bind((HOST, 0))
            self.socks.append(s)
        self.peers = fake_peers(count, [s.getsockname()[1] for s in self.socks])
        self.inc = 1
        self.out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.extra_sent = 0  # datagrams sent to the node besides the blast (subtracted from its count)

    def close(self) -> None:
        for s in [*self.socks, self.out]:
            s.close()

    def register(self, target: Addr) -> None:
        self.inc += 1  # a higher incarnation also refutes any suspicion of them
        self.send(register_datagram(self.peers, self.inc), target)

    def heartbeat(self, target: Addr) -> None:
        for data, _ in heartbeat_datagrams(len(self.peers), self.peers):
            self.send(data, target)

    def send(self, data: bytes, target: Addr) -> None:
        self.extra_sent += 1
        self.out.sendto(data, target)

    async def keepalive(self, target: Addr) -> None:
        """Heartbeats from every fake peer, so that the node never suspects them between blasts."""
        while True:
            self.heartbeat(target)
            await trio.sleep(0.2)
