"""Idle cost against detection, in the simulator: the design step of issue #13.

    python -m benchmarks.sim_idle                                  # every design, ~10 min
    python -m benchmarks.sim_idle --designs lan probe --minutes 5  # some of them, shorter
    python -m benchmarks.sim_idle --designs lan --set heartbeat_interval=0.5 --name hb05

For each design (a Config: a named variant of the lan profile below, plus ``--set`` overrides)
an idle cluster of N nodes (Simulation.bootstrap, latency uniform 0.2-2 ms) is run in virtual
time, seeded, and measured:

load       per-node datagrams/s and bytes/s sent, split by message kind (heartbeat, probe,
           push-pull, repair, gossip...), bytes counted as compare.py does: UDP payload plus
           28 bytes of IPv4 and UDP headers per datagram. At 0 % loss, and during each soak.
detection  kill -9 of ``--kills`` nodes in turn, each just after its heartbeat went out (the
           worst case): time until every survivor reports it failed, max and median.
soak       ``--minutes`` of virtual time at each of ``--losses``, nothing killed: accusations
           (a monitor suspecting a live member: each one is gossiped to the whole cluster),
           suspicion events (every node's member-suspect), refutations and false deaths, per
           node-hour; then the detection of one kill at that loss.

The JSON goes to ``--json`` (docs/results/sim-idle.json), a markdown table to stdout.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import structlog

from benchmarks._lib.cli import new_parser, say_timed, write_json
from chatterd.core import wire
from chatterd.core.config import LAN, Config
from chatterd.core.events import MemberEvent
from chatterd.sim import Simulation

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))

IP_UDP_HEADERS = 28  # what compare.py adds per datagram (IPv4 20 + UDP 8)

# The lan profile before issue #13: 3 monitors, heartbeats every 0.25 s, suspect after 2 s,
# push-pull and reconnect every 5 s, no probes. The candidate designs are variants of it;
# "lan" is today's profile (it became probe-fast).
CLASSIC: dict[str, Any] = {
    "heartbeat_interval": 0.25,
    "probe_before_suspect": False,
    "suspect_after": 2.0,
    "pushpull_interval": 5.0,
    "reconnect_interval": 5.0,
}
_PROBE = {"heartbeat_interval": 1.0, "probe_before_suspect": True}
# Candidate designs (issue #13). Field names are Config's.
DESIGNS: dict[str, dict[str, Any]] = {
    "lan": {},  # today's defaults (probe-fast)
    "classic": CLASSIC,
    "hb1": {**CLASSIC, "heartbeat_interval": 1.0},  # the plain cut: heartbeats every 1 s, nothing else
    "hb05-m2": {**CLASSIC, "heartbeat_interval": 0.5, "monitors": 2},  # 4 heartbeats/s, 2 observers
    "probe": {**CLASSIC, **_PROBE},  # SWIM probes before suspecting
    "probe-pp15": {**CLASSIC, **_PROBE, "pushpull_interval": 15.0},
    "probe-pp30": {**CLASSIC, **_PROBE, "pushpull_interval": 30.0},
    "probe-pp30-rc30": {**CLASSIC, **_PROBE, "pushpull_interval": 30.0, "reconnect_interval": 30.0},
    # the same, suspecting after 1.75 s of silence instead of 2 s: what the lan profile became
    "probe-fast": {**CLASSIC, **_PROBE, "pushpull_interval": 30.0, "reconnect_interval": 30.0, "suspect_after": 1.75},
    "probe-m2": {**CLASSIC, **_PROBE, "monitors": 2, "pushpull_interval": 30.0},
}

_TYPE = re.compile(rb'"type":"([a-z-]+)"')
KIND = {
    "hb": "heartbeat",
    "ping": "probe",
    "ping-req": "probe",
    "vouch": "probe",
    "digest": "push-pull",
    "want": "push-pull",
    "state": "push-pull",
    "have": "repair",
    "join": "join",
    "lease": "lease",
    "rtt": "coordinates",
    "rtt-ack": "coordinates",
}


def kind_of(data: bytes) -> str:
    """The kind of one plaintext datagram: its messages' kind, "gossip" for member news and
    for datagrams mixing kinds. (Idle, no rumor payload can hold a "type" key.)"""
    kinds = {KIND.get(t.decode(), "gossip") for t in _TYPE.findall(data)}
    return kinds.pop() if len(kinds) == 1 else "gossip"


WAKE_COALESCE = 0.005  # turns of one node closer than this count as one wake-up


class Metered(Simulation):
    """A simulation that counts what every node sends, by kind, and how often each node wakes
    up: its turns (a timer, a datagram), those within WAKE_COALESCE of the previous one counted
    with it, as a runtime that drains its socket in one turn would (a proxy for idle CPU)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.by_kind: Counter[str] = Counter()
        self.bytes_by_kind: Counter[str] = Counter()
        self.wakeups = 0
        self._awake: dict[str, float] = {}

    def step(self, node: Any) -> None:
        last = self._awake.get(node.name)
        if last is None or self.now - last > WAKE_COALESCE:
            self.wakeups += 1
            self._awake[node.name] = self.now
        super().step(node)

    def _transmit(self, src: str, data: bytes, addr: tuple[str, int]) -> None:
        k = kind_of(data)
        self.by_kind[k] += 1
        self.bytes_by_kind[k] += len(data) + IP_UDP_HEADERS
        super()._transmit(src, data, addr)

    def reset_meter(self) -> None:
        self.by_kind.clear()
        self.bytes_by_kind.clear()
        self.wakeups = 0

    def rates(self, n: int, seconds: float) -> dict[str, Any]:
        per = n * seconds
        return {
            "datagrams_per_node_s": round(sum(self.by_kind.values()) / per, 3),
            "bytes_per_node_s": round(sum(self.bytes_by_kind.values()) / per, 1),
            "datagrams_by_kind": {k: round(v / per, 3) for k, v in sorted(self.by_kind.items())},
            "bytes_by_kind": {k: round(v / per, 1) for k, v in sorted(self.bytes_by_kind.items())},
            "wakeups_per_node_s": round(self.wakeups / per, 2),
        }


def cluster(cfg: Config, n: int, loss: float, seed: int) -> tuple[Metered, list[str]]:
    sim = Metered(seed=seed, loss=loss, config=cfg)
    names = sim.bootstrap(n)
    sim.run_for(10)  # warm up: heartbeats flowing, the first anti-entropy rounds done
    sim.reset_meter()
    return sim, names


def kill_after_heartbeat(sim: Simulation, victim: str, wait: float, phase: float = 0.0) -> dict[str, Any]:
    """Kill ``victim`` ``phase`` seconds after its heartbeat went out (the next point of the
    shared grid; 0: just after, the worst case). Returns when each survivor reported it failed."""
    hb = sim.config.heartbeat_interval
    sim.run_until((int(sim.now / hb) + 1) * hb + phase)
    t_kill, start = sim.now, len(sim.records)
    sim.kill(victim)
    sim.run_for(wait)
    failed = {
        r.observer: r.time - t_kill
        for r in sim.records[start:]
        if isinstance(r.event, MemberEvent) and r.event.kind == "member-failed" and r.event.node == victim
    }
    survivors = len(sim.live_names())
    times = list(failed.values())
    return {
        "victim": victim,
        "reported": f"{len(failed)}/{survivors}",
        "median_s": round(statistics.median(times), 3) if times else None,
        "max_s": round(max(times), 3) if len(failed) == survivors else None,
    }


def detections(sim: Simulation, names: list[str], kills: int, random_phase: bool = False) -> dict[str, Any]:
    """``kills`` kills in turn, each just after a heartbeat, or (``random_phase``) at a random
    point of the heartbeat interval, as on real processes."""
    cfg = sim.config
    wait = cfg.suspect_after + cfg.suspicion_max + 2.0
    phases = [sim.rng.uniform(0, cfg.heartbeat_interval) if random_phase else 0.0 for _ in range(kills)]
    live = [n for n in names if n not in sim.down]
    rows = [kill_after_heartbeat(sim, live[(3 + 7 * i) % len(live)], wait, p) for i, p in enumerate(phases)]
    maxes = [r["max_s"] for r in rows]
    return {
        "kills": rows,
        "max_s": None if None in maxes else max(maxes),
        "median_s": round(statistics.median(r["median_s"] for r in rows if r["median_s"] is not None), 3),
    }


def false_alarms(sim: Simulation, since: int, n: int, minutes: float) -> dict[str, Any]:
    """Accusations, suspicion events and false deaths among sim.records[since:] (nothing killed)."""
    node_hours = n * minutes / 60
    accusations = suspects = deaths = 0
    for r in sim.records[since:]:
        ev = r.event
        if not isinstance(ev, MemberEvent):
            continue
        if ev.kind == "member-suspect":
            suspects += 1
            accusations += ev.by == r.observer  # the accuser's own record of its accusation
        elif ev.kind == "member-failed":
            deaths += 1
    refutations = sum(node.stats["refutations"] for node in sim.nodes.values())
    return {
        "node_hours": round(node_hours, 2),
        "accusations": accusations,
        "accusations_per_node_h": round(accusations / node_hours, 2),
        "suspect_events_per_node_h": round(suspects / node_hours, 2),
        "refutations": refutations,
        "false_deaths": deaths,
        "false_deaths_per_node_h": round(deaths / node_hours, 3),
    }


def run_design(name: str, cfg: Config, args: Any) -> dict[str, Any]:
    t0 = time.monotonic()
    out: dict[str, Any] = {"design": name, "changes": design_changes(cfg), "n": args.n, "seed": args.seed}
    sim, names = cluster(cfg, args.n, 0.0, args.seed)
    sim.run_for(args.window)
    out["load"] = sim.rates(args.n, args.window)
    out["detection"] = detections(sim, names, args.kills)
    out["detection_random_phase"] = detections(sim, names, args.kills, random_phase=True)
    # With dead members in the table (until reap_after), reconnect sends them digests.
    sim.reset_meter()
    sim.run_for(args.window)
    out["load_with_dead"] = sim.rates(len(sim.live_names()), args.window)
    out["soak"] = []
    for loss in args.losses:
        sim, names = cluster(cfg, args.n, loss, args.seed)
        start = len(sim.records)
        sim.run_for(args.minutes * 60)
        row = {"loss": loss, "minutes": args.minutes, "load": sim.rates(args.n, args.minutes * 60)}
        row.update(false_alarms(sim, start, args.n, args.minutes))
        row["detection"] = detections(sim, names, 1)
        out["soak"].append(row)
        say_timed(f"{name} loss {loss}: {json.dumps({k: v for k, v in row.items() if k != 'load'})}")
    out["wall_s"] = round(time.monotonic() - t0, 1)
    return out


def design_changes(cfg: Config) -> dict[str, Any]:
    """The fields in which ``cfg`` differs from the lan profile."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if getattr(LAN, k) != v}


def encodings() -> dict[str, int]:
    """Byte sizes of the hottest datagrams, JSON (today) against msgpack (same structs)."""
    inc, sender = 1_764_645_123_456, "node-12"
    hb = wire.Datagram(v=wire.VERSION, m=[wire.Heartbeat(inc=inc)], sender=sender)
    dg = wire.Datagram(v=wire.VERSION, m=[wire.DigestMsg(h=[0xFFFFFFFF - 7919 * i for i in range(64)])], sender=sender)
    mp = msgspec.msgpack.Encoder()
    return {
        "heartbeat_json": len(wire.encode(hb.m, sender)),
        "heartbeat_msgpack": len(mp.encode(hb)),
        "digest_json": len(wire.encode(dg.m, sender)),
        "digest_msgpack": len(mp.encode(dg)),
    }


def parse_set(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        kind = type(getattr(LAN, key))
        out[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return out


def table(results: list[dict[str, Any]]) -> str:
    """One markdown row per (design, loss): load, detection, false alarms."""
    head = (
        "| design | loss | datagrams/s | bytes/s | by kind (datagrams/s) | kill → dead max / median |"
        " accusations /node-h | suspect events /node-h | false deaths /node-h |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in results:
        load, det, rnd = r["load"], r["detection"], r["detection_random_phase"]
        kinds = ", ".join(f"{k} {v}" for k, v in load["datagrams_by_kind"].items())
        lines.append(
            f"| {r['design']} | idle 0 % | {load['datagrams_per_node_s']:.2f} | {load['bytes_per_node_s']:.0f} |"
            f" {kinds} | {det['max_s']} / {det['median_s']} s ({len(det['kills'])} kills);"
            f" random phase {rnd['max_s']} / {rnd['median_s']} s | | | |"
        )
        dead = r["load_with_dead"]
        lines.append(
            f"| {r['design']} | idle, dead members known | {dead['datagrams_per_node_s']:.2f} |"
            f" {dead['bytes_per_node_s']:.0f} | | | | | |"
        )
        for s in r["soak"]:
            sl, sd = s["load"], s["detection"]
            lines.append(
                f"| {r['design']} | {s['loss']:.0%} | {sl['datagrams_per_node_s']:.2f} | {sl['bytes_per_node_s']:.0f} |"
                f" | {sd['max_s']} s | {s['accusations_per_node_h']} | {s['suspect_events_per_node_h']} |"
                f" {s['false_deaths_per_node_h']} |"
            )
    return "\n".join(lines)


def main() -> None:
    p = new_parser("sim_idle", (__doc__ or "").split("\n")[0])
    p.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=list(DESIGNS))
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override Config fields of every design")
    p.add_argument("--name", default=None, help="name the (single) design with --set applied")
    p.add_argument("--n", type=int, default=30)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--window", type=float, default=60.0, help="virtual seconds of the idle load measurement")
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--losses", type=float, nargs="*", default=[0.0, 0.05, 0.15, 0.30])
    p.add_argument("--minutes", type=float, default=10.0, help="virtual minutes of each soak")
    p.add_argument("--json", type=Path, default=Path("docs/results/sim-idle.json"))
    args = p.parse_args()
    overrides = parse_set(args.set)
    out: dict[str, Any] = {"encodings": encodings(), "latency_s": [0.0002, 0.002], "designs": []}
    for name in args.designs:
        cfg = LAN.replace(**{**DESIGNS[name], **overrides})
        label = args.name or (name if not overrides else f"{name}+{','.join(args.set)}")
        row = run_design(label, cfg, args)
        say_timed(f"{label}: load {json.dumps(row['load'])} detection max {row['detection']['max_s']}")
        out["designs"].append(row)
    write_json(args.json, out)
    print(json.dumps(out["encodings"]))
    print(table(out["designs"]))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
