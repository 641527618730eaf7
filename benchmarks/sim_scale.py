"""Chatter's protocol at scale, in the simulator: 100 to 10,000 nodes in virtual time.

    python -m benchmarks.sim_scale                      # everything, ~15 min on 2 cores
    python -m benchmarks.sim_scale --quick              # a smoke run (N = 100 only)
    python -m benchmarks.plot_sim docs/sim_scale.json   # draw the PNGs in docs/

The unchanged protocol core (chatterd.core.node.Node) runs on a simulated network with a
uniform 0.2-2 ms latency and random loss (chatterd.sim). Big clusters start converged
(Simulation.bootstrap) rather than by N joins. Seeded: the same arguments give the same
figures. Experiments:

size       for each N: steady per-node datagrams/s and bytes/s, dissemination time of
           user messages to 99 %, 99.99 % and 100 % of nodes, kill -9 detection time
           (median and max over survivors), false deaths.
loss       at N = 1,000: the same figures against loss from 0 to 20 %.
partition  split the cluster in halves until each side declares the other dead, heal,
           time until every node sees every node alive again.
tradeoff   at N = 100 and high loss: detection time against suspicions and false deaths
           for several suspect_after values (why the default is 2 s).
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import structlog

from benchmarks._lib.cli import new_parser, write_json
from chatterd.core.config import LAN
from chatterd.sim import Simulation

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))


def quantile_time(times: list[float], total: int, q: float) -> float | None:
    """Time by which a fraction q of `total` nodes had the message (None: never)."""
    need = max(1, int(-(-q * total // 1)))  # ceil
    if len(times) < need:
        return None
    return sorted(times)[need - 1]


def dissemination(sim: Simulation, names: list[str], messages: int) -> dict[str, Any]:
    live = [n for n in names if n not in sim.down]
    per_q: dict[str, list[float | None]] = {"p99": [], "p9999": [], "p100": []}
    reached = []
    for i in range(messages):
        origin = live[(i * 7919) % len(live)]
        t0 = sim.now
        mid = sim.inject(origin, {"bench": {"i": i}})
        sim.run_for(1.0)
        got = sim.deliveries(mid)
        times = [t - t0 for n, t in got.items() if n != origin]
        total = len(live) - 1
        reached.append(len(got) / len(live))
        per_q["p99"].append(quantile_time(times, total, 0.99))
        per_q["p9999"].append(quantile_time(times, total, 0.9999))
        per_q["p100"].append(quantile_time(times, total, 1.0))
    out: dict[str, Any] = {"messages": messages, "min_reached": min(reached)}
    for k, v in per_q.items():
        done = [x for x in v if x is not None]
        out[k + "_max_s"] = max(done) if len(done) == len(v) else None
        out[k + "_median_s"] = statistics.median(done) if done else None
    return out


def detection(sim: Simulation, victim: str, wait: float) -> dict[str, Any]:
    t_kill = sim.now
    n_before = len(sim.records)
    sim.kill(victim)
    sim.run_for(wait)
    fails = {
        r.observer: r.time - t_kill
        for r in sim.records[n_before:]
        if getattr(r.event, "kind", None) == "member-failed" and r.event.node == victim  # type: ignore[union-attr]
    }
    survivors = len([n for n in sim.nodes if n not in sim.down])
    vals = list(fails.values())
    return {
        "survivors": survivors,
        "reported": len(fails),
        "median_s": statistics.median(vals) if vals else None,
        "max_s": max(vals) if len(fails) == survivors else None,
    }


def load(sim: Simulation, n: int, window: float) -> dict[str, float]:
    s0, b0 = sim.sent, sim.sent_bytes
    sim.run_for(window)
    return {
        "datagrams_per_node_s": (sim.sent - s0) / n / window,
        "bytes_per_node_s": (sim.sent_bytes - b0) / n / window,
    }


def counters(sim: Simulation) -> dict[str, int]:
    keys = ("suspicions", "refutations", "deaths", "starved")
    return {k: sum(node.stats[k] for node in sim.nodes.values()) for k in keys}


def run_size(n: int, loss: float, seed: int, messages: int) -> dict[str, Any]:
    t = time.monotonic()
    sim = Simulation(seed=seed, loss=loss)
    names = sim.bootstrap(n)
    sim.run_for(5)  # warm up: heartbeats flowing, first anti-entropy rounds
    row: dict[str, Any] = {"n": n, "loss": loss, "seed": seed}
    # Two push-pull intervals at least: a shorter window would leave the digests out.
    row["load"] = load(sim, n, max(10.0, 2 * LAN.pushpull_interval))
    row["dissemination"] = dissemination(sim, names, messages)
    row["detection"] = detection(sim, names[n // 2], wait=LAN.suspect_after + LAN.suspicion_max + 2)
    row["false_deaths"] = len(sim.false_deaths())
    row["counters"] = counters(sim)
    row["virtual_s"] = sim.now
    row["wall_s"] = round(time.monotonic() - t, 1)
    return row


def run_partition(n: int, seed: int) -> dict[str, Any]:
    sim = Simulation(seed=seed)
    names = sim.bootstrap(n)
    sim.run_for(3)
    half = n // 2
    sim.partition(names[:half], names[half:])
    t0 = sim.now
    split = None
    while sim.now - t0 < 30:
        sim.run_for(0.5)
        if all(sim.state_of(names[-1], seen_by=x) == "dead" for x in names[:half]) and all(
            sim.state_of(names[0], seen_by=x) == "dead" for x in names[half:]
        ):
            split = sim.now - t0
            break
    sim.run_for(2)
    sim.heal()
    t1 = sim.now
    healed = None
    while sim.now - t1 < 120:
        sim.run_for(0.5)
        # Node internals: every member table (sim.state_of asks one member of one node)
        if all(m.state == "alive" for x in names for m in sim.nodes[x].table.members.values()):
            healed = sim.now - t1
            break
    return {"n": n, "seed": seed, "split_detected_s": split, "heal_converged_s": healed}


# The trade-off sweep (issue #13): the lan detector (probes before suspecting) at these
# suspect_after values, and the detector before it ("classic": heartbeats every 0.25 s, no
# probes, suspect_after 2 s) as the reference, at each loss rate.
TRADEOFF_LOSSES = (0.0, 0.05, 0.15, 0.30)
TRADEOFF_SUSPECT = (1.25, 1.5, 1.75, 2.0)
CLASSIC = {
    "heartbeat_interval": 0.25,
    "probe_before_suspect": False,
    "pushpull_interval": 5.0,
    "reconnect_interval": 5.0,
}


def run_tradeoff(
    n: int, loss: float, suspect_after: float, seed: int, minutes: float, design: str = "lan"
) -> dict[str, Any]:
    cfg = LAN.replace(suspect_after=suspect_after, **(CLASSIC if design == "classic" else {}))
    sim = Simulation(seed=seed, loss=loss, config=cfg)
    names = sim.bootstrap(n)
    sim.run_for(minutes * 60)
    row: dict[str, Any] = {"n": n, "design": design, "loss": loss, "suspect_after": suspect_after, "minutes": minutes}
    row["default"] = design == "lan" and suspect_after == LAN.suspect_after
    row["false_deaths"] = len(sim.false_deaths())
    row["suspicions_per_min"] = counters(sim)["suspicions"] / n / minutes  # events seen per node
    det = [detection(sim, names[i], wait=suspect_after + cfg.suspicion_max + 2) for i in (3, 17, 29)]
    row["detection_max_s"] = max((d["max_s"] or float("inf")) for d in det)
    row["detection_median_s"] = statistics.median(d["median_s"] for d in det if d["median_s"] is not None)
    return row


def main() -> None:
    p = new_parser("sim_scale", __doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    p.add_argument("--losses", type=float, nargs="+", default=[0.0, 0.05, 0.10, 0.15, 0.20])
    p.add_argument("--loss-n", type=int, default=1000, help="cluster size of the loss sweep")
    p.add_argument("--messages", type=int, default=5)
    p.add_argument("--partition-sizes", type=int, nargs="+", default=[100, 300])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, default=Path("docs/sim_scale.json"))
    p.add_argument("--quick", action="store_true", help="N = 100 only, shorter runs (a smoke test)")
    p.add_argument("--skip", nargs="*", default=[], choices=["size", "loss", "partition", "tradeoff"])
    args = p.parse_args()
    if args.quick:
        args.sizes, args.losses, args.loss_n = [100], [0.0, 0.1], 100
    out: dict[str, Any] = {"config": {"profile": "lan", "latency_s": [0.0002, 0.002]}}

    def show(kind: str, row: dict[str, Any]) -> None:
        print(kind, json.dumps(row), flush=True)

    if "size" not in args.skip:
        out["size"] = []
        for n in args.sizes:
            row = run_size(n, 0.0, args.seed, args.messages)
            show("size", row)
            out["size"].append(row)
    if "loss" not in args.skip:
        out["loss"] = []
        for loss in args.losses:
            row = run_size(args.loss_n, loss, args.seed, args.messages)
            show("loss", row)
            out["loss"].append(row)
    if "partition" not in args.skip:
        out["partition"] = []
        for n in [100] if args.quick else args.partition_sizes:
            row = run_partition(n, args.seed)
            show("partition", row)
            out["partition"].append(row)
    if "tradeoff" not in args.skip:
        out["tradeoff"] = []
        minutes = 1 if args.quick else 5
        points = [("lan", sa) for sa in TRADEOFF_SUSPECT] + [("classic", 2.0)]
        for loss in TRADEOFF_LOSSES:
            for design, sa in points:
                row = run_tradeoff(100, loss, sa, args.seed, minutes, design)
                show("tradeoff", row)
                out["tradeoff"].append(row)
    write_json(args.json, out)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
