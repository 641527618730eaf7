"""The primary-standby demo in one command:

    python3 examples/primary-standby/run.py [--kill kill9|pid]
    python3 examples/primary-standby/run.py --shards 8 [--replicas 3] [--clients 1] [--kill pid|kill9]

Starts replicas r1 and r2 (each with its chatterd, 127.0.0.1, free ports), streams updates
through the client, kills the primary and its chatterd with -9 in the middle of the stream
(the standby is promoted; the client's request during the switch is retried), restarts the
old primary (it rejoins as standby and catches up), and compares both replicas. ``--kill
pid`` kills the primary's PID alone instead (its chatterd, started with --exit-with-parent,
then leaves by itself). Everything
is stopped by PID at the end; chatterd logs go to a new temporary directory,
shown at the start and at the end, and kept.

``--shards S`` runs the sharded service instead (shardnode.py, shardrun.py): ``--replicas``
replicas (3) share S shards as balanced chatter roles; the primary of shard-0 is killed with -9
(its PID alone unless ``--kill kill9``), only its shards move; it is restarted during the
stream, catches up and takes back its share. Exit status 0 if every copy of every shard holds
every acknowledged update exactly once, in order, and the shards moved as expected.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scenario import MODES, failover_run
from shardrun import shard_run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--kill",
        choices=MODES,
        help="kill9: the primary's process group; pid: its PID alone (default: kill9, with --shards pid)",
    )
    ap.add_argument("--shards", type=int, default=0, help="run the sharded service with this many shards")
    ap.add_argument("--replicas", type=int, default=3, help="replicas of the sharded service (with --shards)")
    ap.add_argument("--clients", type=int, default=1, help="concurrent clients (with --shards)")
    args = ap.parse_args()
    if args.shards:
        if not 1 <= args.shards <= 256 or not 2 <= args.replicas <= 9 or not 1 <= args.clients <= 32:
            ap.error("--shards must be within 1..256, --replicas within 2..9, --clients within 1..32")
        return run_shards(args.shards, args.replicas, args.kill or "pid", args.clients)
    args.kill = args.kill or "kill9"
    workdir = Path(tempfile.mkdtemp(prefix="primary-standby-"))
    what = "with its chatterd" if args.kill == "kill9" else "alone (its PID)"
    print(f"== r1 and r2 start (logs in {workdir}); 100 updates stream in, the primary is killed -9 {what} after 40,")
    print("== restarted once the stream is done; then both replicas are compared\n", flush=True)
    r = failover_run(workdir, updates=100, kill_after=40, echo=True, mode=args.kill)
    print(f"\n== killed {r['killed']}; {r['promoted']} served the next update {r['takeover_s']:.2f} s after the kill")
    print(f"   updates retried by the client during the switch: {r['retried_updates']}")
    print(f"   {r['killed']} restarted: in sync {r['catch_up_s']:.2f} s after its start, as standby")
    print(f"   primary after the restart: {r['primary_after_restart']} (no fail-back)")
    for name in ("promoted_replica", "restarted_replica"):
        c = r[name]
        print(
            f"   {name.replace('_', ' ')}: duplicates {c['duplicates']}, missing {c['missing']}, "
            f"in order {c['in_order']}"
        )
    print(f"   logs identical: {r['logs_identical']}; primaries at once (max): {r['max_primaries_at_once']}")
    print(f"   logs kept in {workdir}")
    ok = r["logs_identical"] and r["data_identical"] and r["max_primaries_at_once"] == 1
    for n in ("promoted_replica", "restarted_replica"):
        ok = ok and r[n]["duplicates"] == r[n]["missing"] == 0 and r[n]["in_order"]
    return 0 if ok else 1


def run_shards(shards: int, replicas: int, mode: str, clients: int) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="primary-standby-shards-"))
    what = "with its chatterd" if mode == "kill9" else "alone (its PID)"
    print(f"== {replicas} replicas, {shards} shards (logs in {workdir}); updates stream in; after 40 the primary")
    print(f"== of shard-0 is killed -9 {what}; restarted 30 updates later; 40 more once it has its share\n", flush=True)
    r = shard_run(workdir, replicas=replicas, shards=shards, echo=True, mode=mode, clients=clients)
    print(f"\n== killed {r['killed']}, primary of shards {r['held_before_kill']}")
    print(f"   moved on the kill: {r['moved_on_kill']} -> {r['new_holders']} (only the killed node's: ", end="")
    print(f"{r['only_killed_moved']}), in {r['roles_moved_s']:.2f} s; all served again {r['served_again_s']} s after")
    print(f"   {r['killed']} restarted: caught up and a candidate in {r['catch_up_s']:.2f} s; took back ", end="")
    print(f"{r['moved_on_restart']} {r['take_back_s']:.2f} s after its start (only to it: {r['only_to_restarted']})")
    print(f"   (its chatterd's start -> candidate: {r['chatterd_to_candidate_s']} s; the rest is starting Python)")
    print(f"   shards held after the restart: {r['held_after_restart']}")
    print(f"   {r['updates']} updates, retried {r['retried_updates']}, longest stall {r['max_client_stall_s']:.2f} s")
    print(f"   every copy of every shard: duplicates {r['duplicates']}, missing {r['missing']}, ", end="")
    print(f"extra {r['extra']}, ", end="")
    print(f"in order {r['in_order']}, stamps as acknowledged {r['stamps_match']}, identical {r['logs_identical']}")
    print(f"   logs kept in {workdir}")
    ok = r["duplicates"] == r["missing"] == r["extra"] == 0 and r["in_order"] and r["stamps_match"]
    ok = ok and r["ack_epochs_monotone"]
    ok = ok and r["logs_identical"] and r["data_identical"] and r["only_killed_moved"] and r["only_to_restarted"]
    return 0 if ok and r["moved_on_restart"] else 1


if __name__ == "__main__":
    sys.exit(main())
