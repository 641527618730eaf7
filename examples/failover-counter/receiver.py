"""The receiver: a chatter node that prints every count it gets from gossip.

    python3 examples/failover-counter/receiver.py --port 7001 [--record counts.jsonl]

Counts arrive as user messages ``{"count": {"n": 17, "sender": "master", "epoch": 3}}``. The
receiver fences with the epoch (the role's fencing token): a count stamped with an epoch
older than the highest it has seen comes from a holder that has been replaced, and is
rejected. It checks the sequence of accepted counts and reports any number skipped (GAP) or
seen twice (DUPLICATE). ``--record`` writes one JSON line per count for the tests and
measure.py.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sidecar import Sidecar


def stamp(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


class Checker:
    """Fencing and sequence checks over the counts in arrival order."""

    def __init__(self) -> None:
        self.last_n: int | None = None
        self.top_epoch = 0
        self.gaps = 0
        self.duplicates = 0
        self.rejected = 0

    def check(self, n: int, epoch: int) -> str:
        if epoch < self.top_epoch:
            self.rejected += 1
            return "rejected"
        self.top_epoch = epoch
        status = "ok"
        if self.last_n is not None and n <= self.last_n:
            self.duplicates += 1
            status = "duplicate"
        elif self.last_n is not None and n > self.last_n + 1:
            self.gaps += n - self.last_n - 1
            status = "gap"
        self.last_n = n if self.last_n is None else max(self.last_n, n)
        return status


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", default="receiver")
    ap.add_argument("--port", type=int, required=True, help="gossip (UDP) and API (TCP) port of its chatterd")
    ap.add_argument("--join", action="append", default=[], help="HOST:PORT of a node to join (repeatable)")
    ap.add_argument("--record", type=Path, help="append one JSON line per count to this file")
    ap.add_argument("--log", type=Path, help="chatterd's log file")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM: same clean stop as Ctrl-C
    # Ctrl-C even when started with SIGINT ignored (a job a script put in the background)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    node = Sidecar(args.name, args.port, join=args.join, log_path=args.log)
    checker = Checker()
    record = open(args.record, "a") if args.record else None
    try:
        node.start()
        node.wait_ready()
        print(f"receiver: chatterd on {node.addr}, waiting for counts", flush=True)
        while True:
            for ev in node.poll_events():
                payload: Any = ev.get("payload")
                if ev["kind"] != "user" or not isinstance(payload, dict) or "count" not in payload:
                    continue
                c = payload["count"]
                n, sender, epoch = int(c["n"]), str(c["sender"]), int(c["epoch"])
                status = checker.check(n, epoch)
                note = "" if status == "ok" else f"  <-- {status.upper()}"
                if status == "rejected":
                    note += f" (epoch {epoch} < {checker.top_epoch}: a replaced holder)"
                print(f"[{stamp(ev['received_at'])}] {n:5d}  from {sender:<6} (epoch {epoch}){note}", flush=True)
                if record is not None:
                    row = {"n": n, "sender": sender, "epoch": epoch, "status": status}
                    row |= {"sent_at": ev.get("sent_at"), "received_at": ev["received_at"]}
                    record.write(json.dumps(row) + "\n")
                    record.flush()
            time.sleep(0.05)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut the clean stop short
        node.stop()
        if record is not None:
            record.close()
        print(
            f"receiver: stopped; last count {checker.last_n}, gaps {checker.gaps}, "
            f"duplicates {checker.duplicates}, rejected {checker.rejected}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
