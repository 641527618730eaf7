"""Cost of sealed gossip on one core: datagrams/s opened and decoded, sealed vs plaintext,
and the bytes a seal adds.

Three datagrams of the node's own traffic (a heartbeat, one rumor, six rumors) are, for
each mode: decoded (plaintext: ``wire.decode``), or opened, decoded and checked against the
replay window (sealed: ``Sealer.open`` + ``wire.decode`` + ``Sealer.accept``, what
``Node.receive`` does before dispatching); then a whole ``Node.receive`` + timers of a node
that knows 9 peers, fed their heartbeats, in both modes. Each datagram is sealed once per
use, so the replay window sees fresh sequence numbers. Datagrams/s, best of 5.

    python -m benchmarks.seal_throughput [--count 20000] [--json out.json]
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from benchmarks._lib.cli import new_parser, say, write_json
from benchmarks._lib.feeds import fake_peers, heartbeat_datagrams, register_datagram, rumor_datagrams
from chatterd.core import wire
from chatterd.core.config import LAN, SEAL_OVERHEAD
from chatterd.core.keyring import Keyring
from chatterd.core.node import Node
from chatterd.core.seal import Sealer, boot_id
from chatterd.testing import HOST

KEY = bytes(range(32))
REPEATS = 5


def sealer(seed: int) -> Sealer:
    rng = random.Random(seed)
    return Sealer(Keyring([KEY]), "bench", salt=rng.randbytes(4), counter=rng.getrandbits(62), boot=boot_id(seed, 0))


def best_rate(count: int, run: Callable[[], float]) -> float:
    """``run`` handles ``count`` datagrams and returns the seconds it took; best of REPEATS."""
    return max(count / run() for _ in range(REPEATS))


def decode_rates(body: bytes, count: int) -> dict[str, float]:
    sender, receiver = sealer(1), sealer(2)

    def plain() -> float:
        t0 = time.perf_counter()
        for _ in range(count):
            wire.decode(body, LAN.max_receive)
        return time.perf_counter() - t0

    def sealed() -> float:
        batch = [sender.seal(body) for _ in range(count)]  # fresh sequence numbers, outside the clock
        t0 = time.perf_counter()
        for data in batch:
            opened = receiver.open(data)
            dgram = wire.decode(opened.body, LAN.max_receive)
            if receiver.accept(dgram.sender, opened) is not None:
                raise AssertionError("a fresh datagram refused as a replay")
        return time.perf_counter() - t0

    def seal_only() -> float:
        t0 = time.perf_counter()
        for _ in range(count):
            sender.seal(body)
        return time.perf_counter() - t0

    return {
        "plaintext": best_rate(count, plain),
        "sealed": best_rate(count, sealed),
        "seal": best_rate(count, seal_only),
    }


def node_rates(count: int) -> dict[str, float]:
    peers = fake_peers(9)
    feed = heartbeat_datagrams(count, peers)
    out: dict[str, float] = {}
    for mode in ("plaintext", "sealed"):
        rates = []
        for r in range(REPEATS):
            seal = sealer(100 + r) if mode == "sealed" else None
            now = time.monotonic()
            node = Node(LAN, "bench", (HOST, 7000), now=now, wall_offset=time.time() - now,
                        rng=random.Random(r), sealer=seal)  # fmt: skip
            senders = {name: sealer(200 + i) for i, (name, _) in enumerate(peers)}
            reg = register_datagram(peers)
            node.receive(reg if seal is None else senders[peers[0][0]].seal(reg), peers[0][1], now)
            names = {addr: name for name, addr in peers}
            data = [(d if seal is None else senders[names[a]].seal(d), a) for d, a in feed]
            t0 = time.perf_counter()
            for d, a in data:
                node.receive(d, a, now)
            node.handle_timers(now)
            rates.append(count / (time.perf_counter() - t0))
            assert node.stats["decrypt_failed"] == node.stats["replayed"] == node.stats["malformed"] == 0
        out[mode] = max(rates)
    return out


def main(argv: list[str] | None = None) -> int:
    p = new_parser("seal_throughput", __doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--count", type=int, default=20_000, help="datagrams per run (default: 20000)")
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)
    peers = fake_peers(9)
    samples = {
        "heartbeat": heartbeat_datagrams(1, peers)[0][0],
        "1 rumor": rumor_datagrams(1, 1, peers)[0][0],
        "6 rumors": rumor_datagrams(1, 6, peers)[0][0],
    }
    results: dict[str, Any] = {"seal_overhead_bytes": SEAL_OVERHEAD, "decode": {}, "node": {}}
    print(f"{'opened + decoded':<22}{'bytes':>7}{'+seal':>7}{'plaintext/s':>14}{'sealed/s':>12}{'ratio':>8}"
          f"{'sealing/s':>12}")  # fmt: skip
    for name, body in samples.items():
        say(f"decode: {name}")
        r = decode_rates(body, args.count)
        results["decode"][name] = {"bytes": len(body), **r}
        pct = 100 * SEAL_OVERHEAD / len(body)
        print(f"{name:<22}{len(body):>7}{pct:>6.0f}%{r['plaintext']:>14,.0f}{r['sealed']:>12,.0f}"
              f"{r['sealed'] / r['plaintext']:>8.2f}{r['seal']:>12,.0f}")  # fmt: skip
    say("Node.receive: heartbeats from 9 peers")
    r = node_rates(args.count)
    results["node"]["heartbeats"] = r
    print(f"{'Node.receive heartbeat':<22}{'':>14}{r['plaintext']:>14,.0f}{r['sealed']:>12,.0f}"
          f"{r['sealed'] / r['plaintext']:>8.2f}")  # fmt: skip
    print(f"seal overhead: {SEAL_OVERHEAD} bytes per datagram ({100 * SEAL_OVERHEAD / LAN.max_datagram:.1f} % of a "
          f"full {LAN.max_datagram}-byte datagram)")  # fmt: skip
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
