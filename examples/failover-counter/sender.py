"""A sender: counts every second while it holds the chatter role ``sender``.

    python3 examples/failover-counter/sender.py --name master --priority 2 --port 7002 --join 127.0.0.1:7001
    python3 examples/failover-counter/sender.py --name slave  --priority 1 --port 7003 --join 127.0.0.1:7001

Both senders are candidates for the role; chatter elects the holder (the higher priority,
"master") and moves the role to the other when the holder leaves (Ctrl-C: at once) or dies
(kill -9: when the failure detector declares it, ~1.5 s with ``--profile local``).

The holder publishes ``{"count": {"n": N, "sender": NAME, "epoch": E}}`` in gossip, one a
second, with N one above the highest count it has seen. Every sender follows the counts in
gossip (and the ``count`` tag the holder keeps on its member entry, which a node that
(re)joins gets with the member list), so a new holder continues where the old one stopped.
E is the role's epoch (fencing token): the receiver drops counts from a replaced holder.

Before its first count a new holder waits SETTLE seconds (a count the old holder sent just
before dying gets here or is repaired by anti-entropy meanwhile) and keeps the one-second
rhythm from the last count it saw.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sidecar import Sidecar

ROLE = "sender"
TICK = 1.0  # seconds between counts
SETTLE = 0.3  # a new holder's wait before its first count
POLL = 0.05  # API polling interval
LEAVE_GRACE = 0.2  # on Ctrl-C, the last count gets this long to spread before the node leaves


class Sender:
    def __init__(self, node: Sidecar, record: IO[str] | None) -> None:
        self.node = node
        self.record = record
        self.highest = 0  # highest count seen in gossip or sent
        self.last_count_at = 0.0  # monotonic time of the last count seen or sent
        self.last_sent_at = 0.0
        self.epoch: int | None = None  # set while holding the role
        self.acquired_at = 0.0

    def log(self, text: str, **fields: Any) -> None:
        print(f"{self.node.name}: {text}", flush=True)
        if self.record is not None:
            self.record.write(json.dumps({"t": time.time(), "event": text, **fields}) + "\n")
            self.record.flush()

    def see(self, n: int) -> None:
        if n > self.highest:
            self.highest = n
            self.last_count_at = time.monotonic()

    def step(self) -> None:
        for ev in self.node.poll_events():
            p = ev.get("payload")
            if ev["kind"] == "user" and isinstance(p, dict) and isinstance(p.get("count"), dict):
                self.see(int(p["count"]["n"]))
        row = self.node.roles_now().get(ROLE)
        held = bool(row and row["held_here"])
        now = time.monotonic()
        if held and self.epoch is None:
            assert row is not None
            for m in self.node.members().values():  # counts the holders left on their member entries
                tag = m["tags"].get("count", "")
                if tag.isdigit():
                    self.see(int(tag))
            self.epoch, self.acquired_at = int(row["epoch"]), now
            self.log(f"holds role {ROLE} (epoch {self.epoch}); last count seen {self.highest}", kind="acquired")
        elif not held and self.epoch is not None:
            self.log(f"lost role {ROLE}", kind="lost")
            self.epoch = None
        if self.epoch is not None and now >= max(self.acquired_at + SETTLE, self.last_count_at + TICK):
            n = self.highest + 1
            self.node.inject({"count": {"n": n, "sender": self.node.name, "epoch": self.epoch}})
            # keep the rhythm: the next tick is one second after this one was due
            due = self.last_count_at + TICK
            self.last_count_at = due if now - due < POLL * 2 else now
            self.highest = n
            self.last_sent_at = time.monotonic()
            print(f"{self.node.name}: sent {n}", flush=True)
            self.node.set_tags({"count": str(n)})

    def run(self) -> None:
        while True:
            try:
                self.step()
            except OSError as e:  # the API did not answer in time (a loaded machine): try again
                print(f"{self.node.name}: chatterd API: {e}", flush=True)
            time.sleep(POLL)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True, help="node id, carried in every count (master, slave)")
    ap.add_argument("--priority", type=int, default=1, help="priority for the role (higher wins)")
    ap.add_argument("--port", type=int, required=True, help="gossip (UDP) and API (TCP) port of its chatterd")
    ap.add_argument("--join", action="append", default=[], help="HOST:PORT of a node to join (repeatable)")
    ap.add_argument("--record", type=Path, help="append its role changes as JSON lines to this file")
    ap.add_argument("--log", type=Path, help="chatterd's log file")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM: same clean stop as Ctrl-C
    # Ctrl-C even when started with SIGINT ignored (a job a script put in the background)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    node = Sidecar(args.name, args.port, join=args.join, roles={ROLE: args.priority}, log_path=args.log)
    record = open(args.record, "a") if args.record else None
    sender = Sender(node, record)
    try:
        node.start()
        node.wait_ready()
        print(f"{args.name}: chatterd on {node.addr}, candidate for {ROLE} (priority {args.priority})", flush=True)
        sender.run()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # Ctrl-C: stop counting; let the last count spread, then leave (the role moves at once)
        wait = sender.last_sent_at + LEAVE_GRACE - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        sender.log("stopping: leaving the cluster", kind="stopping")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut the clean stop short
        node.stop()
        if record is not None:
            record.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
