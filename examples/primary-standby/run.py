"""The primary-standby demo in one command:

    python3 examples/primary-standby/run.py [--kill kill9|pid]

Starts replicas r1 and r2 (each with its chatterd, 127.0.0.1, free ports), streams updates
through the client, kills the primary and its chatterd with -9 in the middle of the stream
(the standby is promoted; the client's request during the switch is retried), restarts the
old primary (it rejoins as standby and catches up), and compares both replicas. ``--kill
pid`` kills the primary's PID alone instead (its chatterd, started with --exit-with-parent,
then leaves by itself). Everything
is stopped by PID at the end; chatterd logs go to a temporary directory shown at the start.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scenario import MODES, failover_run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--kill", choices=MODES, default="kill9", help="kill9: the primary's process group; pid: its PID alone"
    )
    args = ap.parse_args()
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
    ok = r["logs_identical"] and r["data_identical"] and r["max_primaries_at_once"] == 1
    for n in ("promoted_replica", "restarted_replica"):
        ok = ok and r[n]["duplicates"] == r[n]["missing"] == 0 and r[n]["in_order"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
