"""Throughput (b): how many user messages a cluster of real nodes carries, none lost.

``--cluster-n`` (10) real nodes. This process injects DebugMessages at R msgs/s for
``--duration`` seconds (10), round-robin over the nodes, speaking chatter-inject's protocol
itself over one socket (an ``inject`` datagram with a request id, resent every 0.5 s until its
InjectAck, given up after 5 s), while one task per node pages its ``/v1/events?since=SEQ``
every ``--poll`` seconds (0.3). Then every node must have delivered every accepted message
exactly once (its event rows, cross-checked with its /v1/health ``delivered`` counter; if a
node's 2000-row buffer overflowed, the counters decide). R steps up through
``--cluster-rates`` and stops at the first rate that does not keep up. With py-spy, node n1 is
sampled (1000 Hz) during the first rate. Before the cluster starts, the same number of nodes
runs in ``chatterd.sim`` (loss 0, ``--baseline-messages`` messages 50 ms apart) to measure how
many (message, node) pairs rumor mongering misses with no load at all.

Per rate: injects accepted, lost (message, node) pairs and the number expected with no load,
duplicates, delivery latency (``received_at - sent_at`` per (message, node), origin excluded),
CPU (per node; all nodes, this benchmark, everything else), member-suspect and member-failed
rows, ``starved``. "keeps up": every inject accepted, no duplicate, losses within chance of
the no-load figure, p99 < 1 s, injects sent at >= 95 % of R.

    python -m benchmarks.throughput --parts cluster [--cluster-n 10] [--cluster-rates 250,500,1000,1500,2000,3000]
                                    [--duration 10] [--poll 0.3] [--baseline-messages 4000] [--json out.json]
"""

from __future__ import annotations

import argparse
import shutil
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from benchmarks._lib.cli import say
from benchmarks._lib.feeds import debug_payload, step_payload
from benchmarks._lib.inject import Injected, Injector, Rows, Tally, missing_detail, slowest_pairs, tally
from benchmarks._lib.nodeapi import EventLog, counters, wait_delivered
from benchmarks._lib.phases import CpuSample, CpuUse, cpu_use
from benchmarks._lib.procfs import loadavg_fields
from benchmarks._lib.pyspy import py_spy, spy_lines
from benchmarks._lib.stats import fmt, highest_rate, summary, summary_p99
from chatterd.testing import LocalCluster, LocalNode, local_cluster

TARGET_CLUSTER = 1_000  # user messages/s a 10-node cluster must carry with none lost


@dataclass
class StepRun:
    """What one rate's run gathered: the injects, the nodes' counters and rows, the CPU used."""

    rate: int
    nodes: list[LocalNode]
    inj: Injector
    total: int
    c0: dict[str, Counter[str]]
    c1: dict[str, Counter[str]] = field(default_factory=dict)
    send_s: float = 0.0
    cpu: CpuUse | None = None
    scan_lat: list[float] = field(default_factory=list)
    rows: Rows = ()
    log_problems: list[str] = field(default_factory=list)
    spy: dict[str, Any] = field(default_factory=dict)


async def inject_and_settle(
    run: StepRun, args: argparse.Namespace, log: EventLog, spy_node: LocalNode | None, spy_out: Path | None
) -> None:
    tag = uuid.uuid4().hex[:6]
    nodes = run.nodes
    prepared = [Injector.prepare(nodes[i % len(nodes)], step_payload(tag, run.rate, i)) for i in range(run.total)]
    pids = {n.name: n.pid for n in nodes if n.pid is not None}
    cpu0 = CpuSample.take(pids)

    def sent(seconds: float) -> None:
        run.send_s = seconds
        run.cpu = cpu_use(cpu0, CpuSample.take(pids))

    stop_polling = trio.Event()
    async with trio.open_nursery() as outer:
        for n in nodes:
            outer.start_soon(log.follow, n, stop_polling, args.poll, run.scan_lat)
        if spy_node is not None and spy_node.pid is not None and spy_out is not None:
            outer.start_soon(spy_on, spy_node.pid, max(1.0, args.duration - 2), spy_out, run.spy)
        await run.inj.send_all(prepared, run.rate, sent)
        await wait_delivered(nodes, run.c0, len(run.inj.accepted()), args.settle_timeout)
        await trio.sleep(1.0)  # late duplicates, if any, show up meanwhile
        stop_polling.set()


async def spy_on(pid: int, seconds: float, raw: Path, into: dict[str, Any]) -> None:
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
    await log.scan(nodes)
    mark, problems_mark = len(log.rows), len(log.problems)
    c0 = {n.name: await counters(n) for n in nodes}
    run = StepRun(rate, nodes, Injector(), int(rate * args.duration), c0)
    await inject_and_settle(run, args, log, spy_node, spy_out)
    await log.scan(nodes)
    run.inj.close()
    run.c1 = {n.name: await counters(n) for n in nodes}
    run.rows = log.since(mark)
    run.log_problems = log.problems[problems_mark:]
    return step_figures(run, args, spy_node)


def exactly_once(run: StepRun, t: Tally, mids: dict[str, Injected]) -> tuple[dict[str, int], ...]:
    """Per node: messages missing from its rows, duplicates, its counter minus the accepted."""
    want = len(mids)
    missing: dict[str, int] = {}
    dups: dict[str, int] = {}
    counter_gap: dict[str, int] = {}
    for n in run.nodes:
        seen = t.per_node.get(n.name, Counter())
        miss = sum(1 for m in mids if seen.get(m, 0) == 0)
        dup = sum(c - 1 for c in seen.values() if c > 1)
        delivered = run.c1[n.name]["delivered"] - run.c0[n.name]["delivered"]
        if delivered != want:
            counter_gap[n.name] = delivered - want
        if miss:
            missing[n.name] = miss
        if dup:
            dups[n.name] = dup
    return missing, dups, counter_gap


def delivery_figures(run: StepRun, t: Tally, mids: dict[str, Injected], duration: float) -> dict[str, Any]:
    """Whether every accepted message arrived exactly once everywhere (and the problems found)."""
    missing, dups, counter_gap = exactly_once(run, t, mids)
    lost_rows = [p for p in run.log_problems if "lost" in p]
    problems: list[str] = []
    rows_complete = not lost_rows
    if rows_complete:
        none_lost = not missing and not dups and not counter_gap
    else:  # some rows fell out of a node's buffer: the counters are the only complete record
        none_lost = not counter_gap and not dups
        problems.append("event rows lost from a node's 2000-row buffer: exactly-once checked by counters")
    unacked = run.inj.unacked()
    if unacked:
        problems.append(f"{len(unacked)} injects not accepted ({Counter(i.error for i in unacked).most_common(2)})")
    return {
        "rate": run.rate,
        "duration": duration,
        "send_s": run.send_s,
        "achieved_rate": run.total / run.send_s if run.send_s else 0.0,
        "offered": run.total,
        "accepted": len(mids),
        "unacked": len(unacked),
        "resends": run.inj.sends - run.total,
        "none_lost": none_lost and not unacked,
        "missing": missing,
        "duplicates_delivered": dups,
        "counter_gap": counter_gap,
        "rows_complete": rows_complete,
        "strays": t.strays,
        "problems": problems + lost_rows[:3],
    }


def step_figures(run: StepRun, args: argparse.Namespace, spy_node: LocalNode | None) -> dict[str, Any]:
    """Every figure of one rate, in the order of the JSON output."""
    accepted = run.inj.accepted()
    mids = {i.mid: i for i in accepted if i.mid is not None}
    t = tally(run.rows, mids)
    out = delivery_figures(run, t, mids, args.duration)
    problems = out.pop("problems")
    assert run.cpu is not None
    cpu_nodes = run.cpu.per_process
    c0, c1 = run.c0, run.c1
    keys = ("datagrams_in", "datagrams_out", "duplicates", "stale", "suspicions", "deaths", "starved")
    ack_lat = [i.acked_at - i.first_sent for i in accepted if i.acked_at is not None]
    return out | {
        "latency": summary_p99(t.latency),
        "slowest_node_per_message": summary(list(t.slowest.values())),
        "ack_latency": summary(ack_lat),
        "node_cpu_pct": summary(list(cpu_nodes.values())) | {"sum": sum(cpu_nodes.values())},
        "machine_busy_pct": run.cpu.machine_pct,
        "benchmark_cpu_pct": run.cpu.self_pct,
        "member_events": dict(t.member_events),
        "counters": {k: sum(c1[n][k] - c0[n][k] for n in c1) for k in keys},
        "names": sorted(n.name for n in run.nodes),
        "event_scan_s": summary(run.scan_lat),
        "slowest_pairs": slowest_pairs(run.rows, mids),
        "over_1s": sum(1 for v in t.latency if v > 1.0),
        "missing_detail": missing_detail(out["missing"], t.per_node, mids, run.rows),
        "loadavg": " ".join(loadavg_fields()),
        "py_spy": ({"node": spy_node.name} | run.spy) if spy_node is not None and run.spy else None,
        "problems": problems,
    }


# ---------------------------------------------------------------------- the rates in turn, and the verdicts


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
    return highest_rate(steps, lambda st: st["rate"], lambda st: st[key])


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


# ---------------------------------------------------------------------- report


def rate_line(s: dict[str, Any]) -> str:
    lat = s["latency"]
    dup = sum(s["duplicates_delivered"].values())
    others = 2 * s["machine_busy_pct"] - s["node_cpu_pct"]["sum"] - s["benchmark_cpu_pct"]
    return (
        f"{s['rate']:>7,}{s['achieved_rate']:>8,.0f}{s['accepted']:>10,}{s['lost_pairs']:>6}"
        f"{s['expected_lost']:>8.1f}{dup:>5}{fmt(lat.get('median')):>9}{fmt(lat.get('p99')):>8}{fmt(lat.get('max')):>8}"
        f"{s['node_cpu_pct']['median'] or 0:>8.0f}%{s['node_cpu_pct']['sum']:>6.0f}%{s['benchmark_cpu_pct']:>6.0f}%"
        f"{max(0.0, others):>6.0f}%{s['member_events'].get('member-suspect', 0):>8}"
        f"{s['member_events'].get('member-failed', 0):>7}{s['counters'].get('starved', 0):>8}"
        f"  {'yes' if s['none_lost'] else 'NO'} / {'yes' if s['keeps_up'] else 'NO'}"
    )


def rate_details(s: dict[str, Any]) -> list[str]:
    """What went missing, the slowest delivery, the counters' view, the problems of one rate."""
    lines = []
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
    return lines + [f"    {p}" for p in s["problems"]]


def report_cluster(res: dict[str, Any]) -> list[str]:
    lines = [
        f"(b) {res['n']}-node cluster carrying DebugMessages (injected round-robin; every accepted message must be "
        "delivered exactly once on every node)",
        f"{'rate/s':>7}{'sent/s':>8}{'accepted':>10}{'lost':>6}{'no-load':>8}{'dup':>5}{'median s':>9}{'p99 s':>8}"
        f"{'max s':>8}{'node CPU':>9}{'nodes':>7}{'bench':>7}{'others':>7}{'suspect':>8}{'failed':>7}{'starved':>8}"
        "  none lost / keeps up",
    ]
    for s in res["steps"]:
        lines += [rate_line(s), *rate_details(s)]
    for s in res["steps"]:
        spy = s.get("py_spy")
        if spy:
            head = f"py-spy on {spy['node']} at {s['rate']:,} msgs/s"
            lines += spy_lines(spy, head, own_top=10, compact=True)
    return lines + report_footer(res)


def report_footer(res: dict[str, Any]) -> list[str]:
    lines = []
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
