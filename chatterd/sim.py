"""Many chatter nodes in one process, in virtual time, over a simulated lossy network.

The protocol core (chatterd.core.node.Node) runs unchanged; this module replaces the
socket and the clock. Datagrams are delayed by a random latency, dropped with probability
``loss``, and cut by partitions. Everything is driven by one seeded random generator, so a
run is reproducible: the same seed gives the same events at the same virtual times.

    sim = Simulation(seed=1, loss=0.05)
    sim.start_cluster(20)
    sim.run_for(10)
    sim.kill("n3")
    sim.run_for(5)
    assert all(sim.state_of("n3", seen_by=n) == "dead" for n in sim.live_names())
"""

from __future__ import annotations

import heapq
import itertools
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import structlog

from chatterd.core.config import LAN, Config
from chatterd.core.digest import Digest, bucket_of
from chatterd.core.effects import LoggerFactory
from chatterd.core.events import Delivery, Event, MemberEvent
from chatterd.core.keyring import Keyring
from chatterd.core.membership import ALIVE, Member
from chatterd.core.node import Addr, Node
from chatterd.core.ring import Ring
from chatterd.core.seal import Sealer, boot_id

WALL_OFFSET = 1_800_000_000.0  # virtual Unix time at virtual t=0


class _SimLogger:
    """A node's logger in the simulation: adds the virtual time (``vt``, seconds)."""

    def __init__(self, log: Any, sim: Simulation) -> None:
        self._log = log
        self._sim = sim

    def debug(self, event: str, **kw: Any) -> None:
        self._log.debug(event, vt=round(self._sim.now, 6), **kw)

    def info(self, event: str, **kw: Any) -> None:
        self._log.info(event, vt=round(self._sim.now, 6), **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._log.warning(event, vt=round(self._sim.now, 6), **kw)


@dataclass(frozen=True, slots=True)
class Record:
    time: float
    observer: str
    event: Event


class Simulation:
    def __init__(
        self,
        seed: int = 0,
        loss: float = 0.0,
        latency: tuple[float, float] = (0.0002, 0.002),
        config: Config = LAN,
        keys: list[bytes] | None = None,
        label: str = "",
    ) -> None:
        self.rng = random.Random(seed)
        self.keys = keys  # every node's keyring (sealed gossip), unless add_node says otherwise
        self.label = label
        self.wiretap: list[tuple[str, bytes, Addr]] | None = None  # a list: every datagram sent is kept
        self.loss = loss
        self.latency = latency
        self.config = config
        self.now = 0.0
        self.nodes: dict[str, Node] = {}
        self.addr_of: dict[str, Addr] = {}
        self.name_at: dict[Addr, str] = {}
        self.down: set[str] = set()  # killed: receives and sends nothing
        self.paused: dict[str, list[tuple[bytes, Addr]]] = {}  # starved: inbox held until resume
        self.group: dict[str, int] = {}  # partition group per node; empty = no partition
        self.blocked: set[tuple[str, str]] = set()  # one-way link failures (src, dest)
        # Per-host one-way delay (seconds), added to the random latency of every datagram the
        # host sends or receives: a host behind a slow access link (set_delay). A datagram from
        # a to b takes latency + delay[a] + delay[b]; the round trip twice that on average.
        self.host_delay: dict[str, float] = {}
        self.records: list[Record] = []
        self.sent = 0
        self.sent_bytes = 0
        self.dropped = 0
        self.largest = 0  # biggest datagram sent, in bytes
        self._heap: list[tuple[float, int, str, Any]] = []
        self._seq = itertools.count()
        self._scheduled: dict[str, float] = {}

    # ------------------------------------------------------------------ cluster control

    def logger(self, name: str) -> LoggerFactory:
        """Loggers for node ``name``: its name and the virtual time on every line."""
        return lambda target: _SimLogger(structlog.get_logger(target).bind(at=name), self)

    def add_node(
        self,
        name: str,
        join: list[str] | None = None,
        config: Config | None = None,
        tags: dict[str, str] | None = None,
        expect: int | None = None,
        role_lock: bool = False,
        keys: list[bytes] | None = None,
        label: str | None = None,
        outgoing: bool = True,
        incoming: bool = True,
        discover: bool = False,
    ) -> Node:
        if name not in self.addr_of:
            addr = ("sim", len(self.addr_of) + 1)
            self.addr_of[name] = addr
            self.name_at[addr] = name
        seeds = [self.addr_of[s] for s in (join or [])]
        node = Node(
            config or self.config,
            name,
            self.addr_of[name],
            now=self.now,
            wall_offset=WALL_OFFSET,
            rng=random.Random(self.rng.getrandbits(64)),
            seeds=seeds,
            discover=discover,
            tags=tags,
            expect=expect,
            role_lock=role_lock,
            logger=self.logger(name),
            sealer=self.sealer(keys, label, outgoing=outgoing, incoming=incoming),
        )
        self.nodes[name] = node
        self.down.discard(name)
        self.step(node)
        return node

    def sealer(
        self, keys: list[bytes] | None = None, label: str | None = None, *, outgoing: bool = True, incoming: bool = True
    ) -> Sealer | None:
        """A sealer with its own keyring of ``keys`` (default: the simulation's), its randomness
        from the seeded generator; None without keys (plaintext). ``outgoing`` / ``incoming``:
        the rolling move from plaintext (see Sealer)."""
        keys = keys if keys is not None else self.keys
        if not keys:
            return None
        rng = self.rng
        boot = boot_id(int((self.now + WALL_OFFSET) * 1000), rng.getrandbits(16))
        return Sealer(
            Keyring(keys),
            self.label if label is None else label,
            salt=rng.randbytes(4),
            counter=rng.getrandbits(62),
            boot=boot,
            outgoing=outgoing,
            incoming=incoming,
        )

    def send_raw(self, data: bytes, src: Addr, dest: str) -> None:
        """An attacker's datagram from any address (forged, or replayed from the wiretap)."""
        self.sent += 1
        heapq.heappush(self._heap, (self.now, next(self._seq), "deliver", (dest, data, src)))

    def start_cluster(self, n: int, settle: float = 5.0, prefix: str = "n") -> list[str]:
        """Start n nodes that join through the first one, then let them settle."""
        names = [f"{prefix}{i}" for i in range(n)]
        self.add_node(names[0])
        for name in names[1:]:
            self.add_node(name, join=[names[0]])
        self.run_for(settle)
        return names

    def bootstrap(self, n: int, prefix: str = "n") -> list[str]:
        """n nodes that already know each other, as if they had joined long ago.

        Joining thousands of nodes one by one costs O(N^2) messages; this starts from the
        converged state instead, shared copy-on-write between the nodes, so 10,000 nodes fit
        in memory. Every node then runs the unchanged protocol.
        """
        names = [f"{prefix}{i}" for i in range(n)]
        inc = int((self.now + WALL_OFFSET) * 1000)
        digest = Digest()
        members: dict[str, Member] = {}
        for name in names:
            addr = ("sim", len(self.addr_of) + 1)
            self.addr_of[name] = addr
            self.name_at[addr] = name
            m = Member(name, str(uuid.UUID(int=self.rng.getrandbits(128), version=4)), addr, inc, ALIVE, self.now)
            m.bucket = bucket_of(name)
            digest.update(m.bucket, 0, m.signature())
            members[name] = m
        ring = Ring(names)
        for name in names:
            m = members[name]
            node = Node(
                self.config,
                name,
                m.addr,
                now=self.now,
                wall_offset=WALL_OFFSET,
                rng=random.Random(self.rng.getrandbits(64)),
                node_id=m.id,
                incarnation=inc,
                logger=self.logger(name),
                sealer=self.sealer(),
            )
            node.adopt(members, digest.hashes, ring, self.now)
            self.nodes[name] = node
            self.step(node)
        return names

    def kill(self, name: str) -> None:
        self.down.add(name)
        self._scheduled.pop(name, None)

    def restart(self, name: str, join: list[str], **kw: Any) -> Node:
        self.run_for(0.001)  # a new life gets a later wall clock, hence a higher incarnation
        return self.add_node(name, join=join, **kw)

    def leave(self, name: str) -> None:
        node = self.nodes[name]
        node.leave(self.now)
        self.step(node)
        self.kill(name)

    def set_tags(self, name: str, tags: dict[str, str]) -> bool:
        node = self.nodes[name]
        changed = node.set_tags(tags, self.now)
        self.step(node)
        return changed

    def set_failing(self, name: str, reason: str | None) -> None:
        node = self.nodes[name]
        node.set_failing(reason, self.now)
        self.step(node)

    def holders(self, role: str, alive_only: bool = True) -> dict[str, int]:
        """Nodes that hold ``role`` right now → their epoch."""
        return {
            name: n.roles.held[role].epoch
            for name, n in self.nodes.items()
            if role in n.roles.held and (not alive_only or name not in self.down)
        }

    def pause(self, name: str) -> None:
        self.paused[name] = []
        self._scheduled.pop(name, None)

    def resume(self, name: str) -> None:
        inbox = self.paused.pop(name)
        node = self.nodes[name]
        for data, src in inbox:
            node.receive(data, src, self.now)
        node.handle_timers(self.now)
        self.step(node)

    def partition(self, *groups: list[str]) -> None:
        self.group = {name: i for i, g in enumerate(groups) for name in g}

    def heal(self) -> None:
        self.group = {}
        self.blocked.clear()

    def block(self, src: str, dest: str) -> None:
        """Drop every datagram from src to dest (one direction only)."""
        self.blocked.add((src, dest))

    def set_delay(self, name: str, one_way: float) -> None:
        """Give host ``name`` an access link of ``one_way`` seconds (0: none)."""
        if one_way:
            self.host_delay[name] = one_way
        else:
            self.host_delay.pop(name, None)

    def true_rtt(self, a: str, b: str) -> float:
        """The mean round trip between hosts ``a`` and ``b`` on this simulated network."""
        mean = (self.latency[0] + self.latency[1]) / 2
        return 2 * (mean + self.host_delay.get(a, 0.0) + self.host_delay.get(b, 0.0))

    def inject(self, name: str, payload: dict[str, Any]) -> str:
        node = self.nodes[name]
        mid = node.inject(payload, self.now)
        self.step(node)
        return mid

    # ------------------------------------------------------------------ running

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def run_until(self, until: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= until:
            t, _, kind, data = heapq.heappop(heap)
            self.now = t
            if kind == "timer":
                name = data
                if self._scheduled.get(name) != t:
                    continue  # superseded
                del self._scheduled[name]  # fired: the same deadline may be scheduled again
                node = self.nodes[name]
                node.handle_timers(t)
                self.step(node)
            else:
                dest, payload, src = data
                if dest in self.down:
                    continue
                if dest in self.paused:
                    self.paused[dest].append((payload, src))
                    continue
                node = self.nodes[dest]
                node.receive(payload, src, t)
                node.handle_timers(t)
                self.step(node)
        self.now = until

    def step(self, node: Node) -> None:
        """Carry out what ``node`` produced (datagrams, events, its next timer). The
        simulation calls it after every turn; call it after calling a node directly."""
        name = node.name
        t = self.now
        for data, addr in node.take_outgoing():
            self._transmit(name, data, addr)
        for ev in node.take_events():
            self.records.append(Record(t, name, ev))
        if name in self.down or name in self.paused:
            return
        d = max(node.next_deadline(), t)
        if self._scheduled.get(name) != d:
            self._scheduled[name] = d
            heapq.heappush(self._heap, (d, next(self._seq), "timer", name))

    def _transmit(self, src: str, data: bytes, addr: Addr) -> None:
        if self.wiretap is not None:
            self.wiretap.append((src, data, addr))
        self.sent += 1
        self.sent_bytes += len(data)
        self.largest = max(self.largest, len(data))
        dest = self.name_at.get(addr)
        if dest is None or src in self.down:
            self.dropped += 1
            return
        if (self.group and self.group.get(src, -1) != self.group.get(dest, -2)) or (src, dest) in self.blocked:
            self.dropped += 1
            return
        if self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return
        delay = self.rng.uniform(*self.latency)
        if self.host_delay:
            delay += self.host_delay.get(src, 0.0) + self.host_delay.get(dest, 0.0)
        heapq.heappush(self._heap, (self.now + delay, next(self._seq), "deliver", (dest, data, self.addr_of[src])))

    # ------------------------------------------------------------------ observations

    def live_names(self) -> list[str]:
        return [n for n in self.nodes if n not in self.down]

    def state_of(self, name: str, seen_by: str) -> str | None:
        m = self.nodes[seen_by].table.get(name)
        return None if m is None else m.state

    def member_events(self, kind: str, node: str | None = None) -> list[Record]:
        return [
            r
            for r in self.records
            if isinstance(r.event, MemberEvent) and r.event.kind == kind and (node is None or r.event.node == node)
        ]

    def deliveries(self, message_id: str) -> dict[str, float]:
        """observer → virtual time it got the message (first and only delivery)."""
        out: dict[str, float] = {}
        counts: dict[str, int] = defaultdict(int)
        for r in self.records:
            if isinstance(r.event, Delivery) and r.event.id == message_id:
                counts[r.observer] += 1
                out.setdefault(r.observer, r.time)
        dup = {k: v for k, v in counts.items() if v > 1}
        assert not dup, f"delivered more than once: {dup}"
        return out

    def false_deaths(self, alive: set[str] | None = None) -> list[Record]:
        """member-failed events about nodes that were never killed."""
        live = alive if alive is not None else set(self.live_names())
        return [r for r in self.member_events("member-failed") if r.event.node in live]  # type: ignore[union-attr]
