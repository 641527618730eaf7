"""Throughput: how many datagrams one node ingests, how many user messages a cluster carries.

    python -m benchmarks.throughput [--parts core,profile,json,process,cluster] [--json out.json]
                                    [--rates 10000,20000,...] [--cluster-rates 250,500,1000,2000]
                                    [--log-dir DIR]

core     (a)(i) the protocol core alone, in this process: one ``Node`` that knows ``--peers``
         fake members is fed pre-encoded datagrams the way chatterd/runtime.py feeds it: for each
         turn of the loop, ``receive()`` every datagram of the turn, then ``handle_timers()``,
         ``take_outgoing()``, ``take_events()``, ``next_deadline()``, with ``now`` from the
         monotonic clock. Workloads: new rumors (distinct ids, a small DebugMessage each, from
         the fake peers, hop budget left so the node forwards them), one per datagram and one
         datagram per turn (a lightly loaded node), 32 datagrams per turn (a loaded node drains
         its socket in bursts), six rumors packed per datagram (what forwarding nodes send);
         duplicates only (the same datagrams again); heartbeats. Figures: datagrams/s,
         messages/s, outgoing datagrams per incoming one, the broadcast queue left over, and the
         rate over the first and the last tenth of the run (a falling rate means some cost grows
         with the backlog).
profile  (c) cProfile of the "new rumors" workloads: the top functions by own time.
json     (c) JSON libraries for our wire use: decode + validate + encode (the forwarded copy,
         hop budget - 1) of a typical datagram, with msgspec typed structs (chatterd.core.wire, as
         the node does it), msgspec untyped, orjson and stdlib json (the last three followed by
         the same checks in Python: known fields only, types, version, depth).
process  (a)(ii) one real chatterd process (chatterd.harness), told about ``--peers`` fake
         members whose addresses are sockets of this benchmark that nobody reads (the node's
         forwards are dropped by the kernel there, at no cost to the node). A sender process
         (``--senders``, each its own process) blasts UDP datagrams at it at increasing rates,
         ``--step`` seconds each; the node's /v1/health counters (datagrams_in, delivered,
         duplicates) before and after, and the kernel's drop counter of its socket
         (/proc/net/udp), give what it processed against what was sent. A rate is sustained
         when < 1 % was lost; a series stops at the first rate that is not. Series: new rumors
         with a DebugMessage payload (logged at info by every node that delivers it), new
         rumors with a user payload (not logged at info), duplicates, heartbeats. With
         py-spy installed, the node is then sampled under a blast at the sustained rate.
cluster  (b) ``--cluster-n`` real nodes; this process injects DebugMessages at R msgs/s for
         ``--duration`` seconds, round-robin over the nodes, as chatter-inject does (an
         ``inject`` datagram with a request id, resent every 0.5 s until its InjectAck), while one
         task per node pages its /v1/events?since=SEQ. Then every node must have delivered every
         accepted message exactly once (its rows, and its /v1/health "delivered" counter).
         R steps up through ``--cluster-rates``; it stops at the first rate with a loss.

Exit status 0, or 1 if a target was missed or a correctness check failed. The chatterd source
measured is printed first (HEAD and whether chatterd/ had uncommitted changes).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import hashlib
import json
import os
import pstats
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec
import trio

from benchmarks.latency import CLK_TCK, EventLog, cpu_ticks, summary
from chatterd.core import wire
from chatterd.core.config import PROFILES, Config
from chatterd.core.node import Node
from chatterd.harness import HOST, LocalCluster, LocalNode, local_cluster

Addr = tuple[str, int]

TARGET_INGEST = 20_000  # datagrams/s one node must ingest
TARGET_CLUSTER = 1_000  # user messages/s a 10-node cluster must carry with none lost
LOSS_LIMIT = 0.01  # a blast rate is sustained when less than this fraction was lost
REPO = Path(__file__).resolve().parent.parent


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def source_state() -> str:
    """Which chatterd was measured: HEAD, and a fingerprint of uncommitted changes under chatterd/."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        diff = subprocess.run(["git", "diff", "HEAD", "--", "chatterd"], cwd=REPO, capture_output=True, check=True)
        untracked = subprocess.run(
            ["git", "ls-files", "--others", "--exclude-standard", "chatterd"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    if not diff.stdout and not untracked:
        return f"{head} (clean)"
    h = hashlib.sha1(diff.stdout)
    for path in sorted(untracked):
        with contextlib.suppress(OSError):
            h.update((REPO / path).read_bytes())
    return f"{head} + uncommitted changes in chatterd/ (fingerprint {h.hexdigest()[:10]})"


def debug_payload(i: int) -> dict[str, Any]:
    return {"DebugMessage": {"text": f"throughput benchmark message {i}: all quiet on node 7"}}


def step_payload(tag: str, rate: int, i: int) -> dict[str, Any]:
    return {"DebugMessage": {"text": f"throughput {tag} at {rate}/s: message {i}"}}


def user_payload(i: int) -> dict[str, Any]:
    return {"bench": {"seq": i, "text": "all quiet on node 7"}}


PAYLOADS: dict[str, Callable[[int], dict[str, Any]]] = {"debug": debug_payload, "user": user_payload}


def fake_peers(count: int, ports: Sequence[int] | None = None) -> list[tuple[str, Addr]]:
    ports = ports or [20_000 + i for i in range(count)]
    return [(f"peer{i}", (HOST, ports[i])) for i in range(count)]


def register_datagram(peers: Sequence[tuple[str, Addr]], inc: int = 1) -> bytes:
    """One datagram announcing every fake peer alive (from the first of them)."""
    alive: list[wire.Message] = [
        wire.Alive(node=name, id=str(uuid.UUID(int=i + 1)), addr=wire.format_addr(addr), inc=inc)
        for i, (name, addr) in enumerate(peers)
    ]
    return wire.encode(alive, peers[0][0])


def rumor_datagrams(
    count: int,
    per: int,
    peers: Sequence[tuple[str, Addr]],
    *,
    payload: str = "debug",
    prefix: str | None = None,
    hops: int = 3,
) -> list[tuple[bytes, Addr]]:
    """``count`` datagrams of ``per`` new rumors each, from the peers in turn (distinct ids)."""
    prefix = prefix or uuid.uuid4().hex[:16]
    make = PAYLOADS[payload]
    ts = int(time.time() * 1000)
    out: list[tuple[bytes, Addr]] = []
    k = 0
    for i in range(count):
        name, addr = peers[i % len(peers)]
        rumors: list[wire.Message] = []
        for _ in range(per):
            origin = peers[(k * 7 + 3) % len(peers)][0]
            rumors.append(
                wire.Rumor(id=f"{prefix}{k:016x}", origin=origin, ts=ts, lt=k + 1, hops=hops, payload=make(k))
            )
            k += 1
        out.append((wire.encode(rumors, name), addr))
    return out


def heartbeat_datagrams(count: int, peers: Sequence[tuple[str, Addr]]) -> list[tuple[bytes, Addr]]:
    dgrams = [(wire.encode([wire.Heartbeat(inc=1)], name), addr) for name, addr in peers]
    return [dgrams[i % len(dgrams)] for i in range(count)]


# ---------------------------------------------------------------------- (a)(i) the core alone


def core_node(config: Config, peers: Sequence[tuple[str, Addr]], seed: int = 1) -> Node:
    """A Node that knows every fake peer as a live member, with nothing left to send."""
    now = time.monotonic()
    node = Node(
        config, "bench", (HOST, 7000), now=now, wall_offset=time.time() - now, rng=random.Random(seed), node_id=None
    )
    node.receive(register_datagram(peers), peers[0][1], now)
    node.handle_timers(now)
    node.take_outgoing()
    node.take_events()
    alive = sum(1 for r in node.member_rows(now) if r["state"] == "alive")
    assert alive == len(peers) + 1, f"the core node sees {alive} live members, expected {len(peers) + 1}"
    return node


@dataclass
class CoreRun:
    name: str
    datagrams: int
    messages: int
    seconds: float
    out_datagrams: int
    queue_left: int
    first_tenth: float  # datagrams/s over the first tenth of the feed
    last_tenth: float  # and over the last tenth
    delivered: int
    duplicates: int
    forwarded_share: float  # of the new messages fed, share forwarded at least once during the run
    transmissions: float  # mean transmissions per new message during the run
    retransmits: int  # what the configuration asks for (Config.retransmits)

    @property
    def dgram_rate(self) -> float:
        return self.datagrams / self.seconds

    @property
    def msg_rate(self) -> float:
        return self.messages / self.seconds


def drive(
    node: Node, feed: Sequence[tuple[bytes, Addr]], batch: int, keep: list[bytes] | None = None
) -> tuple[float, int, list[float]]:
    """Feed the node like the runtime does; returns (seconds, outgoing datagrams, checkpoint times).
    The outgoing datagrams are appended to ``keep`` when given (examined after the clock stops)."""
    n = len(feed)
    marks = {max(1, n * k // 10) for k in range(1, 11)}
    checkpoints: list[float] = []
    out = 0
    sent: list[list[tuple[bytes, Addr]]] = []
    clock = time.monotonic
    receive, timers, take_out, take_ev, deadline = (
        node.receive,
        node.handle_timers,
        node.take_outgoing,
        node.take_events,
        node.next_deadline,
    )
    t0 = time.perf_counter()
    done = 0
    for i in range(0, n, batch):
        now = clock()
        for data, addr in feed[i : i + batch]:
            receive(data, addr, now)
        timers(now)
        produced = take_out()
        out += len(produced)
        sent.append(produced)
        take_ev()
        deadline()
        before = done
        done = min(n, i + batch)
        if any(before < m <= done for m in marks):
            checkpoints.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - t0
    if keep is not None:
        keep.extend(data for produced in sent for data, _ in produced)
    return elapsed, out, checkpoints


def forwarding(outgoing: Sequence[bytes], ids: set[str]) -> tuple[float, float]:
    """(share of the fed messages forwarded at least once, mean transmissions per fed message)."""
    counts: Counter[str] = Counter()
    for data in outgoing:
        for msg in wire.decode(data).m:
            if isinstance(msg, wire.Rumor) and msg.id in ids:
                counts[msg.id] += 1
    if not ids:
        return 0.0, 0.0
    return len(counts) / len(ids), sum(counts.values()) / len(ids)


def run_core_workload(
    name: str,
    config: Config,
    peers: Sequence[tuple[str, Addr]],
    feed: Sequence[tuple[bytes, Addr]],
    per: int,
    batch: int,
    *,
    prefeed: bool = False,
) -> CoreRun:
    node = core_node(config, peers)
    if prefeed:  # duplicates: the node has seen every message once already (untimed)
        drive(node, feed, 1)
    s0 = Counter(node.stats)
    gc.collect()
    outgoing: list[bytes] = []
    seconds, out, cps = drive(node, feed, batch, outgoing)
    fwd_share, fwd_mean = 0.0, 0.0
    if per and not prefeed:
        ids = {m.id for data, _ in feed for m in wire.decode(data).m if isinstance(m, wire.Rumor)}
        fwd_share, fwd_mean = forwarding(outgoing, ids)
    del outgoing
    n = len(feed)
    tenth = max(1, n // 10)
    first = tenth / cps[0] if cps and cps[0] > 0 else float("nan")
    last = tenth / (cps[-1] - cps[-2]) if len(cps) >= 2 and cps[-1] > cps[-2] else float("nan")
    return CoreRun(
        name=name,
        datagrams=n,
        messages=n * per,
        seconds=seconds,
        out_datagrams=out,
        queue_left=len(node.queue),
        first_tenth=first,
        last_tenth=last,
        delivered=node.stats["delivered"] - s0["delivered"],
        duplicates=node.stats["duplicates"] - s0["duplicates"],
        forwarded_share=fwd_share,
        transmissions=fwd_mean,
        retransmits=config.retransmits(len(peers) + 1),
    )


Feed = list[tuple[bytes, Addr]]


def core_workloads(
    count: int, peers: Sequence[tuple[str, Addr]]
) -> list[tuple[str, Callable[[], Feed], int, int, bool]]:
    """(name, feed maker, rumors per datagram, datagrams per turn, prefeed). Feeds are made just
    before use: a rumor older than max_message_age (60 s) would be dropped as stale."""

    def single() -> Feed:
        return rumor_datagrams(count, 1, peers)

    def packed() -> Feed:
        return rumor_datagrams(max(1, count // 6), 6, peers)

    return [
        ("new rumors, 1 per datagram, 1 datagram per turn", single, 1, 1, False),
        ("new rumors, 1 per datagram, 32 datagrams per turn", single, 1, 32, False),
        ("new rumors, 6 per datagram, 1 datagram per turn", packed, 6, 1, False),
        ("duplicates, 1 per datagram, 1 datagram per turn", single, 1, 1, True),
        ("duplicates, 6 per datagram, 1 datagram per turn", packed, 6, 1, True),
        ("heartbeats, 1 datagram per turn", lambda: heartbeat_datagrams(count, peers), 0, 1, False),
    ]


def bench_core(args: argparse.Namespace) -> list[CoreRun]:
    config = PROFILES[args.profile]
    peers = fake_peers(args.peers)
    runs = []
    for name, make, per, batch, prefeed in core_workloads(args.core_count, peers):
        feed = make()
        say(f"core: {name} ({len(feed)} datagrams)")
        runs.append(run_core_workload(name, config, peers, feed, per, batch, prefeed=prefeed))
    return runs


def report_core(runs: Sequence[CoreRun]) -> list[str]:
    lines = [
        "(a)(i) ingest of the protocol core alone (Node.receive + handle_timers + take_outgoing, one core)",
        f"{'workload':<52}{'datagrams/s':>12}{'messages/s':>12}{'us/dgram':>10}{'out/in':>8}"
        f"{'queue left':>11}{'1st 10%':>9}{'last 10%':>9}{'fwd once':>9}{'tx/msg':>8}",
    ]
    for r in runs:
        fwd = (
            f"{100 * r.forwarded_share:>8.0f}%{r.transmissions:>8.2f}"
            if r.messages and r.delivered
            else f"{'-':>9}{'-':>8}"
        )
        lines.append(
            f"{r.name:<52}{r.dgram_rate:>12,.0f}{r.msg_rate:>12,.0f}{1e6 / r.dgram_rate:>10.1f}"
            f"{r.out_datagrams / r.datagrams:>8.2f}{r.queue_left:>11,}{r.first_tenth:>9,.0f}{r.last_tenth:>9,.0f}" + fwd
        )
        want = r.messages if "new" in r.name else 0
        if r.delivered != want:
            lines.append(f"  PROBLEM: {r.delivered} delivered, expected {want}")
    lines.append(
        "  out/in: datagrams sent per datagram received; queue left: messages still waiting for retransmission"
    )
    lines.append("  at the end; 1st/last 10%: datagrams/s over the first and the last tenth of the feed; fwd once:")
    lines.append(
        "  share of the new messages the node forwarded at least once while being fed; tx/msg: transmissions per new"
    )
    if runs:
        lines.append(f"  message while being fed (the configuration asks for {runs[0].retransmits} in all).")
    return lines


# ---------------------------------------------------------------------- (c) profile


def profile_core(args: argparse.Namespace, top: int = 14) -> dict[str, Any]:
    config = PROFILES[args.profile]
    peers = fake_peers(args.peers)
    out: dict[str, Any] = {}
    for name, make, per, batch, prefeed in core_workloads(args.core_count // 2, peers):
        if not name.startswith("new") or prefeed:
            continue
        feed = make()
        node = core_node(config, peers)
        prof = cProfile.Profile()
        prof.enable()
        drive(node, feed, batch)
        prof.disable()
        st = pstats.Stats(prof)
        total = st.total_tt  # type: ignore[attr-defined]
        rows = []
        for (path, line, func), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
            rows.append(
                {
                    "function": f"{_short(path)}:{line}({func})",
                    "calls": nc,
                    "tottime": tt,
                    "cumtime": ct,
                    "own_share": tt / total if total else 0.0,
                    "per_dgram_us": 1e6 * tt / len(feed),
                }
            )
        rows.sort(key=lambda r: -r["tottime"])
        cum = sorted(rows, key=lambda r: -r["cumtime"])
        out[name] = {
            "datagrams": len(feed),
            "per": per,
            "total_s": total,
            "by_own_time": rows[:top],
            "by_cumulative": [r for r in cum if "chatterd" in r["function"]][:top],
        }
    return out


def _short(path: str) -> str:
    for marker in ("/chatterd/", "/benchmarks/"):
        i = path.find(marker)
        if i >= 0:
            return path[i + 1 :]
    if path.startswith("~") or path.startswith("<"):
        return path
    return os.path.basename(path)


def bench_record() -> dict[str, float]:
    """Microseconds per delivery in the runtime's Runtime._record (event row + log line), with
    chatterd's logging set up as in a node (CHATTER_LOG=info, JSON lines) writing to /dev/null."""
    import logging

    import structlog

    from chatterd import logs
    from chatterd.core.events import Delivery
    from chatterd.runtime import Options, Runtime

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    out: dict[str, float] = {}
    with open(os.devnull, "w") as devnull:
        try:
            logs.setup(spec="info", fmt="json", stream=devnull)
            rt = Runtime(Options(listen=(HOST, 1), name="bench", config=PROFILES["lan"]))
            ts = int(time.time() * 1000)
            cases = {
                "DebugMessage delivery (logged at info)": Delivery("0" * 32, "debug", "peer1", ts, 3, debug_payload(1)),
                "user-payload delivery (logged at debug: filtered)": Delivery(
                    "0" * 32, "user", "peer1", ts, 3, user_payload(1)
                ),
            }
            for name, ev in cases.items():
                n = 5000
                best = min(timeit.repeat(lambda ev=ev: rt._record(ev), number=n, repeat=3))  # type: ignore[misc]
                out[name] = 1e6 * best / n
        finally:
            root.handlers[:], _ = saved
            root.setLevel(saved[1])
            structlog.reset_defaults()
    return out


def report_profile(prof: dict[str, Any]) -> list[str]:
    lines = ["(c) profile of the core's hot path (cProfile; own time = time in the function itself)"]
    record = prof.pop("runtime_record", None)
    for name, p in prof.items():
        lines.append(
            f"  {name}: {p['datagrams']} datagrams, {p['total_s']:.2f} s profiled "
            f"({1e6 * p['total_s'] / p['datagrams']:.1f} us per datagram under the profiler)"
        )
        lines.append(f"    {'own %':>6}{'own s':>8}{'cum s':>8}{'calls':>10}  function")
        for r in p["by_own_time"]:
            lines.append(
                f"    {100 * r['own_share']:>5.1f}%{r['tottime']:>8.3f}{r['cumtime']:>8.3f}{r['calls']:>10}"
                f"  {r['function']}"
            )
    if record:
        prof["runtime_record"] = record
        lines.append("  the runtime's cost per delivery on top of the core (Runtime._record: event row + log line):")
        lines += [f"    {us:>7.1f} us  {name}" for name, us in record.items()]
    return lines


# ---------------------------------------------------------------------- (c) JSON libraries


_INT = (int,)
DEPTH_SAMPLE = debug_payload(0)
# Field types of the messages in the datagrams compared (what msgspec's typed structs check).
_SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "hb": {"inc": _INT},
    "rumor": {"id": (str,), "origin": (str,), "ts": _INT, "lt": _INT, "hops": _INT, "payload": (dict,)},
    "alive": {"node": (str,), "id": (str,), "addr": (str,), "inc": _INT},
}


class DictWireError(ValueError):
    pass


def validate_dict(d: Any, max_depth: int = 32) -> dict[str, Any]:
    """The checks msgspec's typed decode and wire._check make, on a plain decoded dict."""
    if not isinstance(d, dict):
        raise DictWireError("not an object")
    for k in d:
        if k not in ("v", "m", "from"):
            raise DictWireError(f"unknown field {k}")
    v = d.get("v")
    if type(v) is not int or v != wire.VERSION:
        raise DictWireError("version")
    sender = d.get("from")
    if sender is not None and type(sender) is not str:
        raise DictWireError("from")
    msgs = d.get("m")
    if type(msgs) is not list or not msgs:
        raise DictWireError("m")
    for msg in msgs:
        if type(msg) is not dict:
            raise DictWireError("message")
        schema = _SCHEMA.get(msg.get("type"))  # type: ignore[arg-type]
        if schema is None:
            raise DictWireError("type")
        if len(msg) != len(schema) + 1:
            raise DictWireError("fields")
        for name, types in schema.items():
            val = msg.get(name)
            if type(val) not in types:
                raise DictWireError(name)
        if msg["type"] == "rumor":
            if msg["hops"] < 0 or msg["lt"] < 0:
                raise DictWireError("negative")
            if wire.depth(msg["payload"]) > max_depth:
                raise DictWireError("too deep")
        elif msg["inc"] < 0:
            raise DictWireError("negative")
    return d


def _forward_dict(d: dict[str, Any]) -> dict[str, Any]:
    """The copy a node forwards: its own name, every rumor's hop budget minus one."""
    return {"v": 1, "m": [m | {"hops": m["hops"] - 1} if m["type"] == "rumor" else m for m in d["m"]], "from": "bench"}


def _forward_typed(dg: wire.Datagram) -> bytes:
    enc = [
        wire.encode_message(wire.Rumor(m.id, m.origin, m.ts, m.lt, m.hops - 1, m.payload))
        if isinstance(m, wire.Rumor)
        else wire.encode_message(m)
        for m in dg.m
    ]
    return wire.pack(enc, "bench", 65_507)[0]


def json_variants() -> dict[str, Callable[[bytes], bytes]]:
    variants: dict[str, Callable[[bytes], bytes]] = {
        "msgspec typed (wire.decode, encode_message + pack: what chatterd does)": lambda b: _forward_typed(
            wire.decode(b)
        ),
        "msgspec untyped (decode to dict, checks in Python)": lambda b: msgspec.json.encode(
            _forward_dict(validate_dict(msgspec.json.decode(b)))
        ),
    }
    try:
        import orjson

        variants["orjson (checks in Python)"] = lambda b: orjson.dumps(_forward_dict(validate_dict(orjson.loads(b))))
    except ImportError:
        pass
    variants["stdlib json (checks in Python)"] = lambda b: json.dumps(
        _forward_dict(validate_dict(json.loads(b))), separators=(",", ":"), ensure_ascii=False
    ).encode()
    return variants


def bench_json(args: argparse.Namespace) -> dict[str, Any]:
    peers = fake_peers(args.peers)
    samples = {
        "1 rumor (DebugMessage)": rumor_datagrams(1, 1, peers)[0][0],
        "6 rumors packed": rumor_datagrams(1, 6, peers)[0][0],
        "heartbeat": heartbeat_datagrams(1, peers)[0][0],
    }
    results: dict[str, Any] = {"sizes": {k: len(v) for k, v in samples.items()}, "ops": {}}
    for vname, fn in json_variants().items():
        row: dict[str, float] = {}
        for sname, data in samples.items():
            out = fn(data)
            assert json.loads(out)["m"] == _forward_dict(json.loads(data))["m"], f"{vname} mangled {sname}"
            number = 2000
            best = min(timeit.repeat(lambda fn=fn, data=data: fn(data), number=number, repeat=5))  # type: ignore[misc]
            row[sname] = number / best
        results["ops"][vname] = row
        say(f"json: {vname}")
    # the decode step alone, for reference
    dec: dict[str, Callable[[bytes], Any]] = {
        "msgspec typed (Decoder(wire.Datagram), no further checks)": msgspec.json.Decoder(wire.Datagram).decode,
        "msgspec typed + wire's checks (wire.decode)": wire.decode,
        "wire.depth(payload) of one DebugMessage rumor (inside wire.decode)": lambda b: wire.depth(DEPTH_SAMPLE),
        "msgspec untyped": msgspec.json.decode,
        "stdlib json": json.loads,
    }
    with contextlib.suppress(ImportError):
        import orjson

        dec["orjson"] = orjson.loads
    results["decode_only"] = {
        name: {s: 2000 / min(timeit.repeat(lambda f=f, d=d: f(d), number=2000, repeat=5)) for s, d in samples.items()}  # type: ignore[misc]
        for name, f in dec.items()
    }
    return results


def report_json(res: dict[str, Any]) -> list[str]:
    names = list(res["sizes"])
    head = "".join(f"{n + ' (' + str(res['sizes'][n]) + ' B)':>32}" for n in names)
    lines = ["(c) JSON libraries: decode + validate + encode the forwarded copy, operations/s (one core)"]
    lines.append(f"{'library':<72}{head}")
    for vname, row in res["ops"].items():
        lines.append(f"{vname:<72}" + "".join(f"{row[n]:>32,.0f}" for n in names))
    lines.append("  decode alone (no checks, no encode), operations/s:")
    for vname, row in res["decode_only"].items():
        lines.append(f"    {vname:<68}" + "".join(f"{row[n]:>32,.0f}" for n in names))
    return lines


# ---------------------------------------------------------------------- (a)(ii) a real process


def blast_worker(spec: dict[str, Any]) -> int:
    """Runs in its own process: send datagrams at a fixed rate from ``start_at`` for ``seconds``."""
    target = (spec["host"], spec["port"])
    peers = [(name, (HOST, port)) for name, port in spec["peers"]]
    rate, seconds = spec["rate"], spec["seconds"]
    total = int(rate * seconds)
    kind = spec["kind"]
    if kind == "new":
        dgrams = [d for d, _ in rumor_datagrams(total, 1, peers, payload=spec["payload"], prefix=spec["prefix"])]
    elif kind == "dup":
        # The first pool_size datagrams were sent once, slowly, before (spec["pool"]): all seen.
        pool = [d for d, _ in rumor_datagrams(spec["pool"], 1, peers, payload=spec["payload"], prefix=spec["prefix"])]
        dgrams = [pool[i % len(pool)] for i in range(total)]
    else:
        dgrams = [d for d, _ in heartbeat_datagrams(total, peers)]
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


def udp_drops(port: int) -> int | None:
    """The kernel's receive-drop counter of the UDP socket bound to 127.0.0.1:port (/proc/net/udp)."""
    want = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/udp") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[1] == want:
                    return int(cols[-1])
    except OSError:
        return None
    return None


async def counters(node: LocalNode) -> Counter[str]:
    """The node's /v1/health counters (absent ones read as 0)."""
    h = None
    for _ in range(20):
        h = await node.try_get("/v1/health")
        if h is not None:
            break
        await trio.sleep(0.1)
    if h is None:
        raise RuntimeError(f"{node.name}: /v1/health does not answer")
    return Counter(h["counters"])


@dataclass
class Step:
    series: str
    rate: int
    sent: int
    send_seconds: float
    processed: int
    processed_in_window: int
    kernel_drops: int | None
    delivered: int
    duplicates: int
    cpu_pct: float
    sender_cpu_pct: float  # includes the sender's start-up (building the datagrams)
    machine_busy_pct: float  # both cores
    drain_s: float
    suspicions: int
    starved: int  # times the node saw its own timers run > max_timer_lateness late
    datagrams_out: int  # what it sent meanwhile (forwards, heartbeats)
    sender_errors: int

    @property
    def lost(self) -> int:
        return max(0, self.sent - self.processed)

    @property
    def loss(self) -> float:
        return self.lost / self.sent if self.sent else 0.0

    @property
    def ok(self) -> bool:
        return self.loss < LOSS_LIMIT

    @property
    def timely(self) -> bool:
        """Kept up and its timers ran on time: it also forwarded and sent its heartbeats."""
        return self.ok and self.starved == 0


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


async def keepalive(peers: FakePeers, target: Addr) -> None:
    """Heartbeats from every fake peer, so that the node never suspects them between blasts."""
    while True:
        peers.heartbeat(target)
        await trio.sleep(0.2)


async def blast_step(
    node: LocalNode,
    peers: FakePeers,
    series: str,
    kind: str,
    payload: str,
    rate: int,
    args: argparse.Namespace,
    seconds: float | None = None,
) -> Step:
    assert node.pid is not None
    seconds = seconds or args.step
    target = (HOST, node.port)
    prefix = uuid.uuid4().hex[:16]
    senders = max(1, args.senders)
    pool = 2000
    if kind == "dup":  # make every message of the pool seen once, at a gentle pace
        for i, (data, _) in enumerate(rumor_datagrams(pool, 1, peers.peers, payload=payload, prefix=prefix)):
            peers.send(data, target)
            if i % 100 == 99:
                await trio.sleep(0.01)
        await trio.sleep(0.5)
    start_at = time.time() + args.worker_startup
    specs = [
        {
            "host": HOST,
            "port": node.port,
            "peers": [[name, addr[1]] for name, addr in peers.peers],
            "rate": rate / senders,
            "seconds": seconds,
            "kind": kind,
            "payload": payload,
            "prefix": prefix if kind == "dup" else f"{prefix[:12]}{w:04x}",
            "pool": pool,
            "start_at": start_at,
        }
        for w in range(senders)
    ]
    results: list[dict[str, Any]] = []

    async def worker(spec: dict[str, Any]) -> None:
        proc = await trio.run_process(
            [sys.executable, "-m", "benchmarks.throughput", "--blast-worker", json.dumps(spec)],
            capture_stdout=True,
            check=True,
            cwd=REPO,
        )
        results.append(json.loads(proc.stdout))

    async with trio.open_nursery() as nursery:
        for spec in specs:
            nursery.start_soon(worker, spec)
        await trio.sleep(max(0.0, start_at - time.time() - 0.3))
        c0, x0, d0 = await counters(node), peers.extra_sent, udp_drops(node.port)
        await trio.sleep(max(0.0, start_at - time.time()))
        cpu0, t0, busy0 = cpu_ticks(node.pid), time.monotonic(), machine_busy()
        await trio.sleep(seconds)
        cpu1, t1, busy1 = cpu_ticks(node.pid), time.monotonic(), machine_busy()
        c_window, x_window = await counters(node), peers.extra_sent
    # drain: until the node's count stops moving (besides the keepalive heartbeats)
    t_end = time.monotonic()

    def ours(c: Counter[str], extra: int) -> int:
        return c["datagrams_in"] - c0["datagrams_in"] - (extra - x0)

    last = ours(c_window, x_window)
    stable = 0
    c1 = c_window
    while stable < 2 and time.monotonic() - t_end < 15:
        await trio.sleep(0.25)
        x1 = peers.extra_sent
        c1 = await counters(node)
        now_count = ours(c1, x1)
        stable = stable + 1 if now_count <= last else 0  # a heartbeat in flight can make it dip by a few
        last = max(last, now_count)
    drain = max(0.0, time.monotonic() - t_end - 0.5)
    d1 = udp_drops(node.port)
    sent = sum(r["sent"] for r in results)
    secs = max(r["seconds"] for r in results)
    return Step(
        series=series,
        rate=rate,
        sent=sent,
        send_seconds=secs,
        processed=min(sent, last),
        processed_in_window=ours(c_window, x_window),
        kernel_drops=None if d0 is None or d1 is None else d1 - d0,
        delivered=c1.get("delivered", 0) - c0.get("delivered", 0),
        duplicates=c1.get("duplicates", 0) - c0.get("duplicates", 0),
        cpu_pct=100.0 * (cpu1 - cpu0) / CLK_TCK / (t1 - t0),
        sender_cpu_pct=100.0 * sum(r["cpu_s"] for r in results) / secs,
        machine_busy_pct=100.0 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
        drain_s=drain,
        suspicions=c1["suspicions"] - c0["suspicions"],
        starved=c1["starved"] - c0["starved"],
        datagrams_out=c1["datagrams_out"] - c0["datagrams_out"],
        sender_errors=sum(r["errors"] for r in results),
    )


SERIES = {  # name → (kind, payload)
    "new-debug": ("new", "debug"),  # new rumors, DebugMessage payload (each delivery logged at info)
    "new-user": ("new", "user"),  # new rumors, a user payload (delivery logged at debug: filtered out)
    "dup": ("dup", "debug"),  # duplicates of already delivered rumors
    "hb": ("hb", "debug"),  # heartbeats
}


def highest(steps: Sequence[Step], attr: str) -> int:
    """The highest rate passing ``attr`` with every lower rate passing too."""
    best = 0
    for st in sorted(steps, key=lambda st: st.rate):
        if not getattr(st, attr):
            break
        best = st.rate
    return best


async def bench_process(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"series": {}, "sustained": {}, "timely": {}, "py_spy": None}
    peers = FakePeers(args.peers)
    (log_dir / "process").mkdir(parents=True, exist_ok=True)
    try:
        async with local_cluster(1, extra_args=["--profile", args.profile], log_dir=log_dir / "process") as cluster:
            node = cluster.nodes[0]
            target = (HOST, node.port)
            peers.register(target)
            members = await node.members()
            alive = sum(1 for m in members.values() if m["state"] == "alive")
            if alive != args.peers + 1:
                raise RuntimeError(f"the node sees {alive} live members, expected {args.peers + 1}")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keepalive, peers, target)
                for series in args.series:
                    kind, payload = SERIES[series]
                    steps: list[Step] = []
                    for rate in args.rates:
                        say(f"process: {series} at {rate:,}/s for {args.step:g} s")
                        step = await blast_step(node, peers, series, kind, payload, rate, args)
                        steps.append(step)
                        say(
                            f"  sent {step.sent:,}, processed {step.processed:,} ({100 * step.loss:.2f} % lost), "
                            f"CPU {step.cpu_pct:.0f} %"
                        )
                        peers.register(target)  # in case the blast made it suspect one of them
                        await trio.sleep(args.pause)
                        if not step.ok:
                            break
                    out["series"][series] = [
                        asdict(s) | {"loss": s.loss, "ok": s.ok, "timely": s.timely} for s in steps
                    ]
                    out["sustained"][series] = highest(steps, "ok")
                    out["timely"][series] = highest(steps, "timely")
                if args.py_spy and shutil.which("py-spy"):
                    rate = out["sustained"].get("new-debug") or args.rates[0]
                    out["py_spy"] = await py_spy_profile(node, peers, rate, args, log_dir)
                nursery.cancel_scope.cancel()
            out["counters"] = await counters(node)
    finally:
        peers.close()
    return out


async def py_spy(pid: int, seconds: float, raw: Path, delay: float = 0.0, rate: int = 250) -> dict[str, Any]:
    """Sample a process with py-spy (non-blocking: the process is never paused) and summarise."""
    await trio.sleep(delay)
    argv = ["py-spy", "record", "--nonblocking", "--format", "raw", "--rate", str(rate)]
    argv += ["--duration", str(max(1, round(seconds))), "--pid", str(pid), "--output", str(raw)]
    proc = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    result: dict[str, Any] = {"raw": str(raw), "rc": proc.returncode}
    if proc.returncode != 0:
        result["error"] = proc.stderr.decode(errors="replace").strip()[-500:]
    if raw.exists():
        result |= collapse_stacks(raw.read_text())
    return result


async def py_spy_profile(
    node: LocalNode, peers: FakePeers, rate: int, args: argparse.Namespace, log_dir: Path
) -> dict[str, Any]:
    """Sample the node with py-spy while it ingests new rumors (DebugMessage) at ``rate``."""
    assert node.pid is not None
    say(f"process: py-spy on the node under {rate:,} new rumors/s for {args.spy_seconds:g} s")
    result: dict[str, Any] = {}

    async def spy() -> None:
        result.update(
            await py_spy(node.pid or 0, args.spy_seconds - 1, log_dir / "py-spy-node.txt", args.worker_startup + 0.5)
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(spy)
        step = await blast_step(node, peers, "py-spy", "new", "debug", rate, args, seconds=args.spy_seconds)
    return result | {"rate": rate, "step": asdict(step)}


# Groups of frames whose inclusive share of the samples is reported (a sample counts once per group).
SPY_GROUPS: dict[str, Callable[[str], bool]] = {
    "Runtime._protocol_loop (all protocol work)": lambda f: f.startswith("Runtime._protocol_loop "),
    "  Node.receive": lambda f: f.startswith("Node.receive "),
    "    wire.decode": lambda f: f.startswith("decode (chatterd/core/wire.py"),
    "      wire.depth": lambda f: f.startswith("depth (chatterd/core/wire.py"),
    "    Node._on_rumor": lambda f: f.startswith("Node._on_rumor "),
    "  Node.handle_timers": lambda f: f.startswith("Node.handle_timers "),
    "    Node._flush": lambda f: f.startswith("Node._flush "),
    "  Runtime._pump (send, event rows, logs)": lambda f: f.startswith("Runtime._pump "),
    "    Runtime._record (event rows, logs)": lambda f: f.startswith("Runtime._record "),
    "logging (structlog + stdlib logging)": lambda f: "structlog/" in f or "logging/" in f,
    "HTTP API (hypercorn, starlette, api.py)": lambda f: any(m in f for m in ("hypercorn/", "starlette/", "api.py")),
}


IDLE_FRAME = "EpollIOManager.get_events "


def collapse_stacks(text: str, top: int = 15) -> dict[str, Any]:
    """Own and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    total = idle = 0
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        if frames[-1].startswith(IDLE_FRAME):  # the event loop waiting in epoll: not work
            idle += count
            continue
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
        for g, match in SPY_GROUPS.items():
            if any(match(f) for f in frames):
                groups[g] += count
    if not total:
        return {"samples": 0, "idle_samples": idle}
    return {
        "samples": total,
        "idle_samples": idle,
        "own": [(f, c / total) for f, c in own.most_common(top)],
        "groups": [(g, groups[g] / total) for g in SPY_GROUPS],
    }


def _frame(f: str) -> str:
    """'func (path/file.py:123)' → 'func (path/file.py)': samples add up per function, not per line."""
    name, _, where = f.partition(" (")
    path = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    return f"{name} ({path})" if where else name


def report_process(res: dict[str, Any]) -> list[str]:
    lines = [
        "(a)(ii) ingest of one real chatterd process (UDP from a sender process; counters from /v1/health)",
        f"{'series':<12}{'rate/s':>9}{'sent':>10}{'processed':>11}{'lost':>8}{'kernel drops':>13}"
        f"{'delivered':>11}{'dups':>9}{'out/in':>7}{'starved':>8}{'node CPU':>9}{'machine':>8}  ok",
    ]
    for series, steps in res["series"].items():
        for s in steps:
            kd = "-" if s["kernel_drops"] is None else f"{s['kernel_drops']:,}"
            lines.append(
                f"{series:<12}{s['rate']:>9,}{s['sent']:>10,}{s['processed']:>11,}{100 * s['loss']:>7.2f}%{kd:>13}"
                f"{s['delivered']:>11,}{s['duplicates']:>9,}{s['datagrams_out'] / max(1, s['processed']):>7.2f}"
                f"{s['starved']:>8}{s['cpu_pct']:>8.0f}%{s['machine_busy_pct']:>7.0f}%  "
                f"{'ok' if s['ok'] else 'LOST'}"
            )
    lines.append(
        "  processed: the node's datagrams_in (minus keep-alive heartbeats) once it stopped moving; lost = sent -"
        " processed; out/in: datagrams the node sent per datagram processed; starved: times its timers ran > 0.3 s"
        " late (its loop drained the socket that long without running timers: no heartbeats, no forwarding);"
        " node CPU: % of one core; machine: both cores (node, sender, anything else)"
    )
    for series, rate in res["sustained"].items():
        flag = ""
        if series == "new-debug":
            flag = f"   target >= {TARGET_INGEST:,}: {'ok' if rate >= TARGET_INGEST else 'MISS'}"
        timely = res.get("timely", {}).get(series)
        lines.append(
            f"  sustained (< 1 % lost), {series}: {rate:,} datagrams/s{flag}; and with no timer late: {timely:,}"
        )
    spy = res.get("py_spy")
    if spy:
        if spy.get("samples"):
            lines.append(
                f"  py-spy on the node under {spy['rate']:,} new rumors/s: {spy['samples']} busy samples, "
                f"{spy['idle_samples']} idle ones left out (raw stacks: {spy['raw']})"
            )
            lines.append("    inclusive share of the samples (time in the function and what it calls):")
            lines += [f"    {100 * share:>6.1f}%  {g}" for g, share in spy["groups"]]
            lines.append("    own time (leaf function of the sample):")
            lines += [f"    {100 * share:>6.1f}%  {f}" for f, share in spy["own"]]
        else:
            lines.append(f"  py-spy: no samples ({spy.get('error', 'unknown error')})")
    return lines


# ---------------------------------------------------------------------- (b) a cluster carrying messages


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


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


async def spy_cluster_node(pid: int, seconds: float, raw: Path, into: dict[str, Any]) -> None:
    into.update(await py_spy(pid, seconds, raw, delay=1.0, rate=1000))  # a node mostly idle: sample densely


async def cluster_step(
    cluster: LocalCluster,
    rate: int,
    args: argparse.Namespace,
    log: EventLog,
    spy_node: LocalNode | None = None,
    spy_out: Path | None = None,
) -> dict[str, Any]:
    nodes = cluster.running()
    names = {n.name for n in nodes}
    await log.scan(nodes)
    mark, problems_mark = len(log.rows), len(log.problems)
    c0 = {n.name: await counters(n) for n in nodes}
    problems: list[str] = []
    inj = Injector()
    spy: dict[str, Any] = {}
    total = int(rate * args.duration)
    tag = uuid.uuid4().hex[:6]
    prepared = [Injector.prepare(nodes[i % len(nodes)], step_payload(tag, rate, i)) for i in range(total)]
    pids = {n.name: n.pid for n in nodes if n.pid is not None}
    cpu0 = {name: cpu_ticks(pid) for name, pid in pids.items()}
    busy0, me0, t0 = machine_busy(), self_cpu(), time.monotonic()
    window: dict[str, float] = {}
    scan_lat: list[float] = []

    async def poller(node: LocalNode, stop: trio.Event) -> None:
        while not stop.is_set():
            s = time.monotonic()
            await log.scan([node])
            scan_lat.append(time.monotonic() - s)
            with trio.move_on_after(args.poll):
                await stop.wait()

    async def sender() -> None:
        start = time.monotonic()
        sent = 0
        while sent < total:
            due = min(total, int((time.monotonic() - start) * rate) + 1)
            while sent < due:
                inj.send(prepared[sent])
                sent += 1
            await trio.sleep(0.001)
        window["send_s"] = time.monotonic() - start

    stop_polling = trio.Event()
    async with trio.open_nursery() as outer:
        for n in nodes:
            outer.start_soon(poller, n, stop_polling)
        if spy_node is not None and spy_node.pid is not None:
            outer.start_soon(spy_cluster_node, spy_node.pid, max(1.0, args.duration - 2), spy_out, spy)
        async with trio.open_nursery() as io_tasks:
            io_tasks.start_soon(inj.receive)
            io_tasks.start_soon(inj.resend)
            await sender()
            cpu1 = {name: cpu_ticks(pid) for name, pid in pids.items()}
            busy1, me1, t1 = machine_busy(), self_cpu(), time.monotonic()
            with trio.move_on_after(inj.give_up + 1):
                while inj.pending:
                    await trio.sleep(0.05)
            io_tasks.cancel_scope.cancel()
        accepted = [i for i in inj.by_rid.values() if i.mid is not None]
        # wait until every node has delivered every accepted message, or progress stops
        want = len(accepted)
        deadline = time.monotonic() + args.settle_timeout
        last_total, still = -1, 0.0
        while time.monotonic() < deadline:
            got = {n.name: (await counters(n))["delivered"] - c0[n.name]["delivered"] for n in nodes}
            if all(v >= want for v in got.values()):
                break
            tot = sum(got.values())
            if tot == last_total:
                still += 0.5
                if still >= 5:
                    break
            else:
                still = 0.0
            last_total = tot
            await trio.sleep(0.5)
        await trio.sleep(1.0)  # late duplicates, if any, show up meanwhile
        stop_polling.set()
    await log.scan(nodes)
    inj.close()
    c1 = {n.name: await counters(n) for n in nodes}

    rows = log.since(mark)
    mids = {i.mid: i for i in accepted}
    per_node: dict[str, Counter[str]] = defaultdict(Counter)
    latency: list[float] = []
    slowest: dict[str, float] = {}
    member_events: Counter[str] = Counter()
    strays = 0
    for obs, r in rows:
        if r["kind"].startswith("member-"):
            member_events[r["kind"]] += 1
            continue
        if r["id"] not in mids:
            strays += 1
            continue
        per_node[obs][r["id"]] += 1
        if obs != r["origin"]:
            lat = r["received_at"] - r["sent_at"]
            latency.append(lat)
            slowest[r["id"]] = max(slowest.get(r["id"], 0.0), lat)
    lost_rows = [p for p in log.problems[problems_mark:] if "lost" in p]
    slow_pairs = sorted(
        (
            (r["received_at"] - r["sent_at"], obs, r["id"], r["origin"], r["hops"])
            for obs, r in rows
            if r["id"] in mids and obs != r["origin"]
        ),
        reverse=True,
    )[:5]
    missing: dict[str, int] = {}
    dups: dict[str, int] = {}
    counter_gap: dict[str, int] = {}
    for n in nodes:
        seen = per_node.get(n.name, Counter())
        miss = sum(1 for m in mids if seen.get(m, 0) == 0)
        dup = sum(c - 1 for c in seen.values() if c > 1)
        delivered = c1[n.name]["delivered"] - c0[n.name]["delivered"]
        if delivered != want:
            counter_gap[n.name] = delivered - want
        if miss:
            missing[n.name] = miss
        if dup:
            dups[n.name] = dup
    rows_complete = not lost_rows
    if rows_complete:
        none_lost = not missing and not dups and not counter_gap
    else:  # some rows fell out of a node's buffer: the counters are the only complete record
        none_lost = not counter_gap and not dups
        problems.append("event rows lost from a node's 2000-row buffer: exactly-once checked by counters")
    unacked = [i for i in inj.by_rid.values() if i.mid is None]
    if unacked:
        problems.append(f"{len(unacked)} injects not accepted ({Counter(i.error for i in unacked).most_common(2)})")
    problems += lost_rows[:3]
    cpu_nodes = {name: 100.0 * (cpu1[name] - cpu0[name]) / CLK_TCK / (t1 - t0) for name in pids}
    counts = {
        k: sum(c1[n][k] - c0[n][k] for n in c1)
        for k in ("datagrams_in", "datagrams_out", "duplicates", "stale", "suspicions", "deaths", "starved")
    }
    ack_lat = [i.acked_at - i.first_sent for i in accepted if i.acked_at is not None]
    return {
        "rate": rate,
        "duration": args.duration,
        "send_s": window.get("send_s"),
        "achieved_rate": total / window["send_s"] if window.get("send_s") else 0.0,
        "offered": total,
        "accepted": want,
        "unacked": len(unacked),
        "resends": inj.sends - total,
        "none_lost": none_lost and not unacked,
        "missing": missing,
        "duplicates_delivered": dups,
        "counter_gap": counter_gap,
        "rows_complete": rows_complete,
        "strays": strays,
        "latency": summary(latency) | ({"p99": statistics.quantiles(latency, n=100)[98]} if len(latency) > 100 else {}),
        "slowest_node_per_message": summary(list(slowest.values())),
        "ack_latency": summary(ack_lat),
        "node_cpu_pct": summary(list(cpu_nodes.values())) | {"sum": sum(cpu_nodes.values())},
        "machine_busy_pct": 100.0 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
        "benchmark_cpu_pct": 100.0 * (me1 - me0) / (t1 - t0),
        "member_events": dict(member_events),
        "counters": counts,
        "names": sorted(names),
        "event_scan_s": summary(scan_lat),
        "slowest_pairs": [
            {"latency": lat, "node": obs, "id": mid, "origin": origin, "hops_left": hops}
            for lat, obs, mid, origin, hops in slow_pairs
        ],
        "over_1s": sum(1 for v in latency if v > 1.0),
        "missing_detail": missing_detail(missing, per_node, mids, rows),
        "loadavg": _loadavg(),
        "py_spy": ({"node": spy_node.name} | spy) if spy_node is not None and spy else None,
        "problems": problems,
    }


def missing_detail(
    missing: dict[str, int],
    per_node: dict[str, Counter[str]],
    mids: dict[str, Injected],
    rows: Sequence[tuple[str, dict[str, Any]]],
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


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def protocol_baseline(n: int, messages: int, seed: int = 1) -> dict[str, Any]:
    """Missing (message, node) pairs with no load at all: the same Node in chatterd.sim, loss 0,
    messages 50 ms apart (virtual time). Rumor mongering is probabilistic: a node that none of
    the others happened to pick misses the message, and nothing repairs that later."""
    from chatterd.sim import Simulation

    sim = Simulation(seed=seed, loss=0.0)
    names = sim.start_cluster(n)
    ids = []
    for i in range(messages):
        ids.append(sim.inject(names[i % n], debug_payload(i)))
        sim.run_for(0.05)
    sim.run_for(5.0)
    missing = sum(n - len(sim.deliveries(mid)) for mid in ids)
    pairs = n * len(ids)
    return {"n": n, "messages": len(ids), "pairs": pairs, "missing": missing, "rate": missing / pairs}


def loss_bound(expected: float) -> float:
    """Upper end of what chance alone gives for a Poisson count with this mean (about 99.9 %)."""
    return expected + 3.1 * expected**0.5 + 1.0


def lost_pairs(s: dict[str, Any]) -> int:
    if s["rows_complete"]:
        return sum(s["missing"].values())
    return -sum(min(0, v) for v in s["counter_gap"].values())


def judge(step: dict[str, Any], baseline: dict[str, Any] | None) -> None:
    """none_lost: every accepted message exactly once on every node. keeps_up: every inject
    accepted, no duplicate, the losses no more than the protocol loses with no load, p99 < 1 s."""
    lost = lost_pairs(step)
    pairs = step["accepted"] * len(step["names"])
    expected = baseline["rate"] * pairs if baseline else 0.0
    step["lost_pairs"] = lost
    step["expected_lost"] = expected
    p99 = step["latency"].get("p99") or step["latency"].get("max") or 0.0
    step["keeps_up"] = (
        step["unacked"] == 0
        and not step["duplicates_delivered"]
        and lost <= loss_bound(expected)
        and p99 < 1.0
        and step["achieved_rate"] >= 0.95 * step["rate"]
    )


def best_rate(steps: Sequence[dict[str, Any]], key: str) -> int:
    """The highest rate passing ``key`` with every lower rate passing too."""
    best = 0
    for st in sorted(steps, key=lambda st: st["rate"]):
        if not st[key]:
            break
        best = st["rate"]
    return best


async def bench_cluster(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    baseline = None
    if args.baseline_messages > 0:
        say(f"cluster: protocol baseline in the simulator ({args.baseline_messages} messages, N={args.cluster_n})")
        baseline = protocol_baseline(args.cluster_n, args.baseline_messages)
    extra = ["--profile", args.profile]
    (log_dir / "cluster").mkdir(parents=True, exist_ok=True)
    async with local_cluster(args.cluster_n, extra_args=extra, log_dir=log_dir / "cluster") as cluster:
        log = EventLog()
        for rate in args.cluster_rates:
            await cluster.wait_converged(timeout=60)
            await trio.sleep(2.0)
            say(f"cluster: {args.cluster_n} nodes, {rate:,} msgs/s for {args.duration:g} s")
            spy = args.py_spy and shutil.which("py-spy") is not None and rate == args.cluster_rates[0]
            spy_node = cluster.nodes[1] if spy else None
            step = await cluster_step(cluster, rate, args, log, spy_node, log_dir / "py-spy-cluster-node.txt")
            judge(step, baseline)
            steps.append(step)
            lat = step["slowest_node_per_message"]
            say(
                f"  accepted {step['accepted']:,}/{step['offered']:,}, lost pairs {step['lost_pairs']} "
                f"(no-load baseline {step['expected_lost']:.1f}), slowest node per message: median "
                f"{lat['median'] or 0:.3f} s, max {lat['max'] or 0:.3f} s, "
                f"machine {step['machine_busy_pct']:.0f} % busy"
            )
            if not step["keeps_up"]:
                break
    return {
        "n": args.cluster_n,
        "steps": steps,
        "baseline": baseline,
        "best": best_rate(steps, "none_lost"),
        "keeps_up": best_rate(steps, "keeps_up"),
    }


def report_cluster(res: dict[str, Any]) -> list[str]:
    lines = [
        f"(b) {res['n']}-node cluster carrying DebugMessages (injected round-robin; every accepted message must be "
        "delivered exactly once on every node)",
        f"{'rate/s':>7}{'sent/s':>8}{'accepted':>10}{'lost':>6}{'no-load':>8}{'dup':>5}{'median s':>9}{'p99 s':>8}"
        f"{'max s':>8}{'node CPU':>9}{'nodes':>7}{'bench':>7}{'others':>7}{'suspect':>8}{'failed':>7}{'starved':>8}"
        "  none lost / keeps up",
    ]
    for s in res["steps"]:
        lat = s["latency"]
        dup = sum(s["duplicates_delivered"].values())
        others = 2 * s["machine_busy_pct"] - s["node_cpu_pct"]["sum"] - s["benchmark_cpu_pct"]
        lines.append(
            f"{s['rate']:>7,}{s['achieved_rate']:>8,.0f}{s['accepted']:>10,}{s['lost_pairs']:>6}"
            f"{s['expected_lost']:>8.1f}{dup:>5}{_f(lat.get('median')):>9}{_f(lat.get('p99')):>8}{_f(lat.get('max')):>8}"
            f"{s['node_cpu_pct']['median'] or 0:>8.0f}%{s['node_cpu_pct']['sum']:>6.0f}%{s['benchmark_cpu_pct']:>6.0f}%"
            f"{max(0.0, others):>6.0f}%{s['member_events'].get('member-suspect', 0):>8}"
            f"{s['member_events'].get('member-failed', 0):>7}{s['counters'].get('starved', 0):>8}"
            f"  {'yes' if s['none_lost'] else 'NO'} / {'yes' if s['keeps_up'] else 'NO'}"
        )
        if s["missing"] and s["rows_complete"]:
            lines.append(f"    missing deliveries per node: {s['missing']}")
            for d in s["missing_detail"][:2]:
                lines.append(
                    f"    e.g. {d['id'][:12]}.. accepted by {d['accepted_by']}, missing on {d['node']}; "
                    f"(node, hops left) where delivered: {d['delivered_on']}"
                )
        if s["over_1s"]:
            sp = s["slowest_pairs"][0]
            lines.append(
                f"    {s['over_1s']} deliveries took > 1 s; slowest: {sp['latency']:.3f} s on {sp['node']} "
                f"(origin {sp['origin']}, hops left {sp['hops_left']})"
            )
        if s["counter_gap"] and not s["rows_complete"]:
            lines.append(f"    'delivered' counter minus accepted, per node: {s['counter_gap']}")
        lines += [f"    {p}" for p in s["problems"]]
    for s in res["steps"]:
        spy = s.get("py_spy")
        if spy and spy.get("samples"):
            lines.append(
                f"  py-spy on {spy['node']} at {s['rate']:,} msgs/s: {spy['samples']} busy samples, "
                f"{spy['idle_samples']} idle ones left out (raw stacks: {spy['raw']}); inclusive shares:"
            )
            lines += [f"    {100 * share:>6.1f}%  {g}" for g, share in spy["groups"]]
            lines.append("    own time (leaf function of the sample):")
            lines += [f"    {100 * share:>6.1f}%  {f}" for f, share in spy["own"][:10]]
        elif spy:
            lines.append(f"  py-spy: no samples ({spy.get('error', 'unknown error')})")
    b = res["baseline"]
    if b:
        lines.append(
            f"  no-load: missing pairs expected from the protocol alone, at the rate measured in chatterd.sim "
            f"(N={b['n']}, loss 0, {b['messages']:,} messages 50 ms apart: {b['missing']} of {b['pairs']:,} pairs "
            f"missing = {b['rate']:.1e} per pair)"
        )
    lines.append(
        "  latency: received_at - sent_at per (message, node), origin excluded; node CPU: median per node; "
        "nodes / bench / others: CPU of all nodes, of this benchmark, of everything else, % of one core (2 cores)"
    )
    lines.append(
        "  keeps up: every inject accepted, no duplicate, losses within chance at the no-load rate, p99 < 1 s, "
        "injects sent at >= 95 % of the rate"
    )
    ok = "ok" if res["best"] >= TARGET_CLUSTER else "MISS"
    lines.append(f"  highest rate with none lost: {res['best']:,} msgs/s   target >= {TARGET_CLUSTER:,}: {ok}")
    lines.append(f"  highest rate that keeps up: {res['keeps_up']:,} msgs/s")
    return lines


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


# ---------------------------------------------------------------------- main


PARTS = ("core", "profile", "json", "process", "cluster")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput",
        description="Ingest rate of one chatterd node and message throughput of a cluster.",
    )
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--profile", choices=sorted(PROFILES), default="lan", help="chatterd timing profile (default: lan)")
    p.add_argument("--peers", type=int, default=9, help="fake members the measured node knows (default: 9)")
    p.add_argument("--core-count", type=int, default=40_000, help="datagrams per core workload (default: 40000)")
    p.add_argument(
        "--rates",
        type=_ints,
        default=[5_000, 10_000, 15_000, 20_000, 25_000, 30_000, 40_000, 50_000, 60_000, 80_000],
        help="blast rates for the real process, datagrams/s (default: 5000,...,80000)",
    )
    p.add_argument(
        "--series",
        default=",".join(SERIES),
        help="blast series: new-debug (new rumors, DebugMessage), new-user (new rumors, user payload), "
        "dup (duplicates), hb (heartbeats) (default: all)",
    )
    p.add_argument("--step", type=float, default=3.0, help="seconds per blast rate (default: 3)")
    p.add_argument("--pause", type=float, default=1.0, help="pause between blast rates (s, default: 1)")
    p.add_argument("--senders", type=int, default=1, help="sender processes for the blast (default: 1)")
    p.add_argument("--worker-startup", type=float, default=2.0, help=argparse.SUPPRESS)
    p.add_argument("--no-py-spy", dest="py_spy", action="store_false", help="skip py-spy sampling of the nodes")
    p.add_argument("--spy-seconds", type=float, default=6.0, help="py-spy blast length (s, default: 6)")
    p.add_argument("--cluster-n", type=int, default=10, help="nodes in the cluster for (b) (default: 10)")
    p.add_argument(
        "--cluster-rates",
        type=_ints,
        default=[250, 500, 1000, 1500, 2000, 3000],
        help="inject rates for (b), msgs/s (default: 250,500,1000,1500,2000,3000)",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds of injection per rate (default: 10)")
    p.add_argument("--poll", type=float, default=0.3, help="seconds between event polls of each node (default: 0.3)")
    p.add_argument("--settle-timeout", type=float, default=30.0, help=argparse.SUPPRESS)
    p.add_argument(
        "--baseline-messages",
        type=int,
        default=4000,
        help="messages for the no-load loss baseline in the simulator; 0 to skip (default: 4000)",
    )
    p.add_argument("--log-dir", default=None, help="keep the nodes' logs (and py-spy output) here")
    p.add_argument("--json", default=None, metavar="PATH", help="write the raw figures to PATH")
    p.add_argument("--blast-worker", default=None, help=argparse.SUPPRESS)
    return p


async def amain(args: argparse.Namespace, parts: list[str], log_dir: Path) -> tuple[dict[str, Any], bool]:
    res: dict[str, Any] = {"source": source_state(), "args": {k: v for k, v in vars(args).items()}}
    ok = True
    print(f"chatterd source: {res['source']}; profile {args.profile}; {os.cpu_count()} CPUs\n", flush=True)

    def emit(lines: list[str]) -> None:
        print("\n".join(lines) + "\n", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1, default=str))

    if "core" in parts:
        runs = bench_core(args)
        res["core"] = [asdict(r) | {"datagrams_per_s": r.dgram_rate, "messages_per_s": r.msg_rate} for r in runs]
        emit(report_core(runs))
    if "profile" in parts:
        res["profile"] = profile_core(args) | {"runtime_record": bench_record()}
        emit(report_profile(res["profile"]))
    if "json" in parts:
        res["json_libs"] = bench_json(args)
        emit(report_json(res["json_libs"]))

    def recheck_source(part: str) -> None:
        """chatterd may be edited while this runs: the processes run what is on disk when they start."""
        now = source_state()
        res.setdefault("source_per_part", {})[part] = now
        if now != res["source"]:
            print(f"note: chatterd source changed since the start; for {part}: {now}\n", flush=True)

    if "process" in parts:
        recheck_source("process")
        res["process"] = await bench_process(args, log_dir)
        sustained = res["process"]["sustained"].get("new-debug")
        ok &= sustained is None or sustained >= TARGET_INGEST
        emit(report_process(res["process"]))
    if "cluster" in parts:
        recheck_source("cluster")
        res["cluster"] = await bench_cluster(args, log_dir)
        ok &= res["cluster"]["best"] >= TARGET_CLUSTER
        emit(report_cluster(res["cluster"]))
    return res, ok


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.blast_worker is not None:
        return blast_worker(json.loads(args.blast_worker))
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        parser.error(f"unknown part(s) {bad}; choose from {','.join(PARTS)}")
    args.series = [s.strip() for s in args.series.split(",") if s.strip()]
    if any(s not in SERIES for s in args.series):
        parser.error(f"--series: choose from {', '.join(SERIES)}")
    if args.peers < 3 or args.core_count < 100 or args.step <= 0 or args.duration <= 0:
        parser.error("--peers >= 3, --core-count >= 100, --step and --duration > 0")
    with contextlib.ExitStack() as stack:
        if args.log_dir is None:
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chatter-throughput-")))
        else:
            log_dir = Path(args.log_dir)
            log_dir.mkdir(parents=True, exist_ok=True)
        try:
            _res, ok = trio.run(amain, args, parts, log_dir)
        except KeyboardInterrupt:  # the harness has stopped the nodes, trio the sender processes
            print("interrupted", file=sys.stderr)
            return 130
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
