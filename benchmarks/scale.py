"""Scale on one machine: N chatterd processes on loopback, a kill, a soak, false failures.

    python -m benchmarks.scale --n 100 --minutes 5 [--profile lan] [--log-dir DIR] [--json PATH]

In order, on one cluster of ``--n`` real processes (chatterd.testing.local_cluster, every node
joining through n0; each node's JSON log kept in ``--log-dir``):

converge  every process is started at once; the time until every node shows all N members
          alive (taken from t0, just before the first process starts: start-up included).
          Light polling: ``--sample`` nodes' /v1/health member counts until they agree, then
          every node once (their /v1/health), again for the ones not there yet.
CPU       over ``--cpu-window`` seconds of the converged, idle cluster: utime + stime of every
          node (/proc/PID/stat), the whole machine's busy share (/proc/stat), the load average.
          Nothing polls the nodes meanwhile.
kill      kill -9 of a random node other than the seed (time.time() just before os.kill); the
          sample nodes' /v1/members are polled until they show it dead, then every survivor's
          /v1/events are read (repeatedly, for those without the event yet): detection time on
          a survivor = received_at of its member-failed row about the victim - the kill time.
soak      ``--minutes`` more with nothing else happening: the sample nodes' /v1/health every
          ``--health-every`` s and machine load; every node's events every ``--scan-every`` s
          (the buffers hold 2000 rows). At the end, every node's /v1/health counters, against
          their values before the kill: suspicions, refutations, deaths, starved (timers late:
          Lifeguard's local health).
false     a member-failed row about a node that was never killed is a false failure, a
          member-suspect row about one a false suspicion. For each false failure the accuser's
          and the accused's log lines around it are printed (timers_late, member_suspected,
          refuted, member_failed).

Every process is stopped by PID at the end, also on Ctrl-C (the harness does it). Exit status
0, or 1 if the cluster did not converge, a survivor did not report the kill, or there was a
false failure.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from benchmarks._lib.cli import add_output_args, add_profile_arg, new_parser, run_trio, say, source_state, write_json
from benchmarks._lib.nodeapi import EventLog, Window, all_counters, count_log_lines, false_events, health, log_lines
from benchmarks._lib.phases import CpuSample, cpu_hogs, cpu_use
from benchmarks._lib.procfs import busy_pct, loadavg, machine_busy, rss_mb
from benchmarks._lib.stats import quantiles
from chatterd.testing import LocalCluster, LocalNode, local_cluster

COUNTERS = ("suspicions", "refutations", "deaths", "starved", "suspicion_confirmations", "malformed")
EVIDENCE = {"timers_late", "member_suspected", "member_suspect", "member_failed", "refuted", "member_alive"}


async def alive_count(node: LocalNode) -> int:
    h = await health(node, tries=1)
    return -1 if h is None else int(h["members"].get("alive", 0))


# ---------------------------------------------------------------------- phases


async def wait_converged(
    cluster: LocalCluster, sample: Sequence[LocalNode], n: int, timeout: float, t0: float
) -> dict[str, Any]:
    """Until every node counts n live members. Returns the time from t0 and the polls made."""
    deadline = time.monotonic() + timeout
    polls = 0
    # 1. a few nodes only, until they all count n
    while time.monotonic() < deadline:
        counts = [await alive_count(s) for s in sample]
        polls += len(sample)
        if all(c == n for c in counts):
            break
        await trio.sleep(1.0)
    # 2. every node, again for those not there yet
    waiting = list(cluster.running())
    while waiting and time.monotonic() < deadline:
        still = []
        for node in waiting:
            polls += 1
            if await alive_count(node) != n:
                still.append(node)
        waiting = still
        if waiting:
            await trio.sleep(1.0)
    t = time.time() - t0
    return {
        "converged": not waiting,
        "seconds": t,
        "not_converged": [w.name for w in waiting],
        "polls": polls,
    }


def measure_cpu_start(nodes: Sequence[LocalNode]) -> CpuSample:
    return CpuSample.take({n.name: n.pid for n in nodes if n.pid is not None and n.running()})


def measure_cpu_end(start: CpuSample, nodes: Sequence[LocalNode]) -> dict[str, Any]:
    running = [n for n in nodes if n.pid is not None and n.name in start.ticks and n.running()]
    use = cpu_use(start, CpuSample.take({n.name: n.pid for n in running if n.pid is not None}))
    per_node = use.per_process
    total = sum(per_node.values())
    cores = os.cpu_count() or 1
    return {
        "seconds": use.seconds,
        "per_node": quantiles(list(per_node.values())),
        "nodes_total_pct_of_core": total,
        "machine_busy_pct": use.machine_pct,
        "benchmark_pct_of_core": use.self_pct,
        "others_pct_of_core": max(0.0, use.machine_pct * cores - total - use.self_pct),
        "loadavg": loadavg(),
        "rss_mb_total": sum(rss_mb(n.pid) for n in nodes if n.pid is not None and n.running()),
        "_per_node": per_node,
    }


async def measure_kill(
    cluster: LocalCluster,
    log: EventLog,
    victim: LocalNode,
    sample: Sequence[LocalNode],
    timeout: float,
) -> dict[str, Any]:
    survivors = [n for n in cluster.running() if n is not victim]
    await log.scan(cluster.running())  # every node's rows so far, the victim's too
    mark = len(log.rows)
    t_kill = time.time()
    victim.kill()
    deadline = time.monotonic() + timeout

    async def sample_dead() -> bool:
        for s in sample:
            if (await cluster.states(s)).get(victim.name) != "dead":
                return False
        return True

    while time.monotonic() < deadline and not await sample_dead():
        await trio.sleep(0.5)
    t_sample = time.time() - t_kill
    found: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        await trio.sleep(1.0)
        await log.scan([n for n in survivors if n.name not in found])
        for obs, r in log.since(mark):
            if r["kind"] == "member-failed" and r["origin"] == victim.name and obs not in found:
                found[obs] = r
        if len(found) == len(survivors):
            break
    missing = sorted(n.name for n in survivors if n.name not in found)
    states: dict[str, str | None] = {}
    for name in missing[:20]:
        states[name] = (await cluster.states(cluster.node(name))).get(victim.name)
    latencies = {obs: r["received_at"] - t_kill for obs, r in found.items()}
    after_s = [r["payload"].get("after_s") for r in found.values() if r["payload"].get("after_s") is not None]
    accusers = Counter(r["payload"].get("by") for r in found.values())
    await victim.wait_exit()
    return {
        "victim": victim.name,
        "t_kill": t_kill,
        "survivors": len(survivors),
        "reported": len(found),
        "missing": missing,
        "missing_states": states,
        "sample_saw_dead_s": t_sample,
        "detection": quantiles(list(latencies.values())),
        "after_s": quantiles(after_s),
        "by": dict(accusers.most_common(5)),
        "_latency": latencies,
    }


async def soak(
    cluster: LocalCluster,
    log: EventLog,
    sample: Sequence[LocalNode],
    args: argparse.Namespace,
    windows: Sequence[Window],
) -> dict[str, Any]:
    end = time.monotonic() + 60 * args.minutes
    next_scan = time.monotonic() + args.scan_every
    timeline: list[dict[str, Any]] = []
    busy_prev = machine_busy()
    crashed: list[str] = []
    while time.monotonic() < end:
        await trio.sleep(min(args.health_every, max(0.0, end - time.monotonic())))
        busy = machine_busy()
        point: dict[str, Any] = {
            "t": round(60 * args.minutes - (end - time.monotonic()), 1),
            "loadavg": loadavg(),
            "machine_busy_pct": busy_pct(busy_prev, busy),
        }
        busy_prev = busy
        for s in sample:
            h = await health(s, tries=1)
            if h is not None:
                c = h["counters"]
                point[s.name] = {k: c.get(k, 0) for k in ("suspicions", "refutations", "starved", "deaths")}
        timeline.append(point)
        for n in cluster.nodes:
            if n.proc is not None and n.proc.poll() is not None and n.name not in crashed:
                if not any(w.name == n.name for w in windows):
                    crashed.append(n.name)
        if time.monotonic() >= next_scan:
            await log.scan(cluster.running())
            next_scan = time.monotonic() + args.scan_every
            ff = false_events(log, "member-failed", windows)
            fs = false_events(log, "member-suspect", windows)
            say(
                f"  soak t={point['t']:.0f}s: load {point['loadavg'][0]:.1f}, machine "
                f"{point['machine_busy_pct']:.0f} % busy, false failures {len(ff)}, false suspicions {len(fs)}"
            )
    await log.scan(cluster.running())
    return {"timeline": timeline, "crashed": crashed}


# ---------------------------------------------------------------------- evidence from the logs


def evidence(cluster: LocalCluster, false_failures: Sequence[dict[str, Any]], limit: int = 5) -> list[dict[str, Any]]:
    out = []
    for e in false_failures[:limit]:
        t = e["received_at"]
        accuser = e["payload"].get("by") or e["observer"]
        item: dict[str, Any] = {"event": e, "logs": {}}
        for name in dict.fromkeys([e["observer"], accuser, e["about"]]):
            try:
                node = cluster.node(name)
            except StopIteration:
                continue
            item["logs"][name] = log_lines(node.log_path, t - 10, t + 2, EVIDENCE)
        out.append(item)
    return out


# ---------------------------------------------------------------------- main run


async def run(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    res: dict[str, Any] = {
        "source": source_state(),
        "n": args.n,
        "profile": args.profile,
        "log_dir": str(log_dir),
        "hogs": args.hogs,
    }
    extra = ["--profile", args.profile]
    t0 = time.time()
    say(f"starting {args.n} chatterd processes (logs in {log_dir})")
    async with local_cluster(args.n, extra_args=extra, log_dir=log_dir, converge=False) as cluster:
        res["spawn_s"] = time.time() - t0
        victim = rng.choice(cluster.nodes[1:])
        others = [n for n in cluster.nodes if n is not victim]
        sample = rng.sample(others, min(args.sample, len(others)))
        res["sample"] = [s.name for s in sample]
        busy0 = machine_busy()
        conv = await wait_converged(cluster, sample, args.n, args.converge_timeout, t0)
        busy1 = machine_busy()
        conv["machine_busy_pct"] = busy_pct(busy0, busy1)
        conv["loadavg"] = loadavg()
        res["converge"] = conv
        say(f"converged: {conv['converged']} after {conv['seconds']:.1f} s ({conv['polls']} health polls)")
        if not conv["converged"]:
            res["problems"] = [f"not converged after {args.converge_timeout:g} s: {conv['not_converged'][:10]}"]
            return res

        await trio.sleep(args.settle)
        say(f"idle CPU over {args.cpu_window:g} s")
        start = measure_cpu_start(cluster.running())
        await trio.sleep(args.cpu_window)
        res["cpu_idle"] = measure_cpu_end(start, cluster.running())

        log = EventLog()
        await log.scan(cluster.running())
        c_before = await all_counters(cluster.running())

        with cpu_hogs(args.hogs, say):
            await kill_and_soak(cluster, log, victim, sample, args, res, c_before)
    return res


async def kill_and_soak(
    cluster: LocalCluster,
    log: EventLog,
    victim: LocalNode,
    sample: Sequence[LocalNode],
    args: argparse.Namespace,
    res: dict[str, Any],
    c_before: dict[str, Counter[str]],
) -> None:
    say(f"kill -9 {victim.name}")
    kill = await measure_kill(cluster, log, victim, sample, args.kill_timeout)
    res["kill"] = kill
    d = kill["detection"]
    say(
        f"  {kill['reported']}/{kill['survivors']} survivors reported it; median {d.get('median', 0):.2f} s, "
        f"max {d.get('max', 0):.2f} s"
    )
    windows = [Window(victim.name, kill["t_kill"], float("inf"))]

    say(f"soak for {args.minutes:g} min")
    start = measure_cpu_start(cluster.running())
    res["soak"] = await soak(cluster, log, sample, args, windows)
    res["cpu_soak"] = measure_cpu_end(start, cluster.running())
    c_after = await all_counters(cluster.running())

    deltas: dict[str, dict[str, int]] = {}
    for name, after in c_after.items():
        before = c_before.get(name, Counter())
        deltas[name] = {k: after[k] - before[k] for k in COUNTERS}
    totals = {k: sum(d[k] for d in deltas.values()) for k in COUNTERS}
    nonzero = {k: sum(1 for d in deltas.values() if d[k]) for k in COUNTERS}
    top_starved = sorted(((d["starved"], name) for name, d in deltas.items()), reverse=True)[:5]
    res["counters"] = {
        "nodes_read": len(c_after),
        "since": "just before the kill",
        "totals": totals,
        "nodes_with_any": nonzero,
        "most_starved": top_starved,
    }
    ff = false_events(log, "member-failed", windows)
    fs = false_events(log, "member-suspect", windows)
    res["false_failures"] = ff
    res["false_suspicions"] = {"count": len(fs), "about": dict(Counter(e["about"] for e in fs).most_common(10))}
    res["evidence"] = evidence(cluster, ff)
    res["timers_late_lines"] = sum(count_log_lines(cluster.nodes, "timers_late").values())
    res["event_problems"] = log.problems


# ---------------------------------------------------------------------- report


def _q(d: dict[str, Any], digits: int = 2) -> str:
    if not d.get("count"):
        return "none"
    keys = ("min", "p10", "median", "p90", "p99", "max")
    return "  ".join(f"{k} {d[k]:.{digits}f}" for k in keys)


def report(res: dict[str, Any], args: argparse.Namespace) -> tuple[str, bool]:
    """The report, and whether the cluster converged, every survivor reported the kill, no
    process exited on its own and there was no false failure."""
    lines = [
        f"scale: N = {res['n']} chatterd processes on 127.0.0.1, {os.cpu_count()} CPUs, profile {res['profile']}"
        + (f", {res['hogs']} CPU hog processes from the kill on" if res.get("hogs") else ""),
        f"chatterd source: {res['source']}; logs: {res['log_dir']}",
    ]
    ok = True
    for section in (report_converge, report_cpu, report_kill, report_soak, report_false):
        more, section_ok = section(res, args)
        lines += more
        ok &= section_ok
    for p in res.get("problems", []) + res.get("event_problems", []):
        lines.append(f"  PROBLEM: {p}")
    return "\n".join(lines), ok


def report_converge(res: dict[str, Any], args: argparse.Namespace) -> tuple[list[str], bool]:
    conv = res.get("converge", {})
    line = (
        f"converge: {'yes' if conv.get('converged') else 'NO'} in {conv.get('seconds', 0):.1f} s from the first start "
        f"(all {res['n']} started within {res.get('spawn_s', 0):.1f} s; machine "
        f"{conv.get('machine_busy_pct', 0):.0f} % busy meanwhile, load {conv.get('loadavg', ['-'])[0]})"
    )
    return [line], bool(conv.get("converged"))


def report_cpu(res: dict[str, Any], args: argparse.Namespace) -> tuple[list[str], bool]:
    lines = []
    for key, label in (("cpu_idle", "idle, converged"), ("cpu_soak", "soak (after the kill)")):
        c = res.get(key)
        if not c:
            continue
        pn = c["per_node"]
        lines.append(
            f"CPU {label} over {c['seconds']:.0f} s: per node median {pn['median']:.2f} %, p90 {pn['p90']:.2f} %, "
            f"max {pn['max']:.2f} % of a core; all nodes {c['nodes_total_pct_of_core']:.0f} % of a core; machine "
            f"{c['machine_busy_pct']:.0f} % busy (both cores; this benchmark {c['benchmark_pct_of_core']:.1f} %, "
            f"others {c['others_pct_of_core']:.0f} % of a core); load {' '.join(f'{x:.2f}' for x in c['loadavg'])}; "
            f"RSS {c['rss_mb_total'] / 1024:.1f} GB in all"
        )
    return lines, True


def report_kill(res: dict[str, Any], args: argparse.Namespace) -> tuple[list[str], bool]:
    k = res.get("kill")
    if not k:
        return [], True
    lines = [
        f"kill -9 {k['victim']}: reported dead by {k['reported']}/{k['survivors']} survivors "
        f"(sample nodes saw it dead after {k['sample_saw_dead_s']:.2f} s)",
        f"  detection time (s, member-failed received_at - kill): {_q(k['detection'])}",
        f"  silence when declared (after_s, the node's own figure): {_q(k['after_s'])}",
        f"  declared by (first accuser as reported): {k['by']}",
    ]
    if k["missing"]:
        lines.append(f"  NOT REPORTED by {k['missing'][:20]} (their view of it: {k['missing_states']})")
    return lines, not k["missing"]


def report_soak(res: dict[str, Any], args: argparse.Namespace) -> tuple[list[str], bool]:
    lines = []
    c = res.get("counters")
    if c:
        t = c["totals"]
        lines.append(
            f"soak {args.minutes:g} min, counters over all {c['nodes_read']} survivors since {c['since']} "
            f"(total / nodes with any): "
            + ", ".join(f"{key} {t[key]} / {c['nodes_with_any'][key]}" for key in COUNTERS)
        )
        if c["most_starved"] and c["most_starved"][0][0]:
            lines.append(f"  most starved nodes (count, node): {c['most_starved']}")
        lines.append(f"  timers_late log lines in all the nodes' logs (whole run): {res.get('timers_late_lines')}")
    soak = res.get("soak")
    if not soak:
        return lines, True
    tl = soak["timeline"]
    if tl:
        busy = [p["machine_busy_pct"] for p in tl]
        load = [p["loadavg"][0] for p in tl]
        lines.append(
            f"  machine during the soak: busy median {statistics.median(busy):.0f} %, max {max(busy):.0f} %; "
            f"load (1 min) median {statistics.median(load):.1f}, max {max(load):.1f}"
        )
    if soak["crashed"]:
        lines.append(f"  PROCESSES THAT EXITED on their own: {soak['crashed']}")
    return lines, not soak["crashed"]


def report_false(res: dict[str, Any], args: argparse.Namespace) -> tuple[list[str], bool]:
    if "false_failures" not in res:
        return [], True
    ff = res["false_failures"]
    fs = res["false_suspicions"]
    lines = [
        f"false failures (member-failed about a node never killed): {len(ff)}   target = 0: "
        f"{'ok' if not ff else 'MISS'}",
        f"false suspicions (member-suspect rows about live nodes, all observers): {fs['count']} {fs['about']}",
    ]
    for item in res.get("evidence", []):
        e = item["event"]
        lines.append(f"  FALSE FAILURE: {e['observer']} declared {e['about']} failed: {e['payload']}")
        for name, rows in item["logs"].items():
            for r in rows[-8:]:
                detail = {k: v for k, v in r.items() if k not in ("t", "event")}
                lines.append(f"    {name} log {r['t'] - e['received_at']:+.2f} s: {r['event']} {detail}")
    return lines, not ff


# ---------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = new_parser(
        "scale", "Start N chatterd processes on loopback: convergence, CPU, a kill, and a soak for false failures."
    )
    p.add_argument("--n", type=int, default=100, help="processes (default: 100)")
    p.add_argument("--minutes", type=float, default=5.0, help="soak after the kill, in minutes (default: 5)")
    add_profile_arg(p)
    p.add_argument("--sample", type=int, default=3, help="nodes polled while waiting (default: 3)")
    p.add_argument("--cpu-window", type=float, default=30.0, help="idle CPU window in seconds (default: 30)")
    p.add_argument("--settle", type=float, default=5.0, help="pause after convergence (s, default: 5)")
    p.add_argument("--converge-timeout", type=float, default=600.0, help="longest wait to converge (s)")
    p.add_argument("--kill-timeout", type=float, default=60.0, help="longest wait for the kill to be reported (s)")
    p.add_argument("--health-every", type=float, default=15.0, help="sample nodes' health poll period (s)")
    p.add_argument("--scan-every", type=float, default=60.0, help="every node's events read this often (s)")
    p.add_argument("--seed", type=int, default=None, help="seed for the choice of victim and sample nodes")
    p.add_argument(
        "--hogs",
        type=int,
        default=0,
        help="busy-looping processes run from the kill to the end of the soak, to saturate the CPU (default: 0)",
    )
    add_output_args(p, "the nodes' logs (default: a new /tmp/chatter-scale-* directory)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.n < 4 or args.minutes < 0 or args.sample < 1:
        parser.error("--n must be >= 4, --minutes >= 0, --sample >= 1")
    if args.log_dir is None:
        log_dir = Path(f"/tmp/chatter-scale-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    else:
        log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    # on Ctrl-C, the harness has stopped every node by PID on the way out
    res = run_trio(run, args, log_dir, interrupted=f"interrupted (logs in {log_dir})")
    if res is None:
        return 130
    text, ok = report(res, args)
    print(text, flush=True)
    if args.json:
        write_json(args.json, res)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
