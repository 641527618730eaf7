"""A replica of the key-value service: the holder of the chatter role ``primary`` takes
updates and replicates each one to the standby before acknowledging it.

    python3 examples/primary-standby/replica.py --name r1 --port 7101 --http-port 7201 --bootstrap
    python3 examples/primary-standby/replica.py --name r2 --port 7102 --http-port 7202 --join 127.0.0.1:7101 --bootstrap

HTTP (JSON) on --http-port:
  POST /update     {"id": ID, "key": K, "value": V}: the primary stamps it (epoch, seq), applies it,
                   replicates it to every live standby, then answers {"seq", "epoch"}; an ID it
                   has already applied gets the first answer again (idempotent retries). Any other
                   replica answers 503 {"primary": NAME}.
  POST /replicate  the primary → a standby: {"epoch", "primary_seq", "entries": [...]}, applied in
                   seq order; answers {"seq": its last applied}. Refused (409) from a stale epoch.
  GET  /state      role, epoch, seq, in_sync, data, the applied ids in order.

Failover is chatter's: both replicas are candidates with equal priority, so the role stays
with its holder (no fail-back) and moves to the standby when the primary leaves or dies. A
replica only becomes a candidate once it holds everything the primary acknowledged:
``--bootstrap`` (first start of the system: empty is complete), or, on a restart, once it has
caught up from the primary; it then adds the tag role:primary itself. A replica that loses the
role without dying drops its state and catches up again (it may hold an update the new
primary never acknowledged).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from jsonhttp import JsonHandler
from sidecar import HOST, Sidecar, http_json

ROLE = "primary"
CANDIDACY = {f"role:{ROLE}": "1"}
POLL = 0.05  # chatterd API polling
PUSH_EVERY = 0.2  # the primary's catch-up / heartbeat push to standbys
LIVE = ("alive", "suspect")  # member states the primary waits for before acknowledging


class NotPrimary(Exception):
    pass


class Replica:
    def __init__(self, node: Sidecar, candidate: bool) -> None:
        self.node = node
        self.lock = threading.RLock()  # state, log, and one update or push at a time
        self.log: list[dict[str, Any]] = []
        self.data: dict[str, Any] = {}
        self.by_id: dict[str, dict[str, Any]] = {}
        self.epoch: int | None = None  # ours while we hold the role
        self.top_epoch = 0  # highest epoch seen (role table or replication)
        self.holder: str | None = None
        self.in_sync = candidate
        self.candidate = candidate
        self.peers: dict[str, tuple[str, str]] = {}  # name → (state, http addr)
        self.acked: dict[str, int] = {}  # standby → its last applied seq
        self.stopping = threading.Event()

    def say(self, text: str) -> None:
        print(f"{self.node.name}: {text}", flush=True)

    # ------------------------------------------------------------ state
    def apply(self, e: dict[str, Any]) -> None:
        self.log.append(e)
        self.data[e["key"]] = e["value"]
        self.by_id[e["id"]] = e

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "name": self.node.name,
                "role": "primary" if self.epoch is not None else "standby",
                "epoch": self.epoch,
                "holder": self.holder,
                "seq": len(self.log),
                "in_sync": self.in_sync,
                "candidate": self.candidate,
                "data": self.data,
                "log": [[e["epoch"], e["seq"], e["id"]] for e in self.log],
            }

    # ------------------------------------------------------------ primary
    def update(self, uid: str, key: str, value: Any) -> dict[str, Any]:
        with self.lock:
            if self.epoch is None:
                raise NotPrimary
            if uid in self.by_id:
                e = self.by_id[uid]
                return {"seq": e["seq"], "epoch": e["epoch"], "by": self.node.name, "repeat": True}
            e = {"seq": len(self.log) + 1, "epoch": self.epoch, "id": uid, "key": key, "value": value}
            self.apply(e)
            self.replicate(wait=True)
            if self.epoch != e["epoch"]:
                raise NotPrimary  # lost the role meanwhile: not acknowledged
            return {"seq": e["seq"], "epoch": e["epoch"], "by": self.node.name, "repeat": False}

    def replicate(self, wait: bool) -> None:
        """Push what each live standby misses. ``wait``: retry until every live standby has it
        (or stops being live, or we lose the role). Called with the lock held."""
        while self.epoch is not None:
            missing = []
            for name, (mstate, http) in list(self.peers.items()):
                if mstate not in LIVE or not http:
                    continue
                if not self.push(name, http) and wait:
                    missing.append(name)
            if not missing or not wait or self.stopping.is_set():
                return
            self.lock.release()  # let the watcher see the peer fail or the role move
            try:
                time.sleep(0.1)
            finally:
                self.lock.acquire()

    def push(self, name: str, http: str) -> bool:
        assert self.epoch is not None
        start = self.acked.get(name, 0)
        body = {"epoch": self.epoch, "from": self.node.name, "primary_seq": len(self.log), "entries": self.log[start:]}
        try:
            r = http_json(f"http://{http}/replicate", body, timeout=1.0)
        except OSError:  # includes HTTP errors (a 409 from a stale epoch: we are no longer primary)
            self.acked.pop(name, None)
            return False
        self.acked[name] = int(r["seq"])
        return self.acked[name] >= len(self.log)

    # ------------------------------------------------------------ standby
    def receive(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            epoch = int(body["epoch"])
            if epoch < self.top_epoch or (self.epoch is not None and epoch <= self.epoch):
                return 409, {"error": f"stale epoch {epoch} < {max(self.top_epoch, self.epoch or 0)}"}
            self.top_epoch = epoch
            for e in body["entries"]:
                if e["seq"] == len(self.log) + 1:
                    self.apply(e)
            if len(self.log) >= int(body["primary_seq"]) and not self.in_sync:
                self.in_sync = True
                self.say(f"caught up with {body['from']} at seq {len(self.log)}: in sync")
            return 200, {"seq": len(self.log)}

    # ------------------------------------------------------------ chatter
    def watch(self) -> None:
        """Follow the role and the members in chatterd; push to standbys while primary."""
        last_push = 0.0
        while not self.stopping.is_set():
            try:
                row = self.node.roles_now().get(ROLE)
                members = self.node.members()
            except OSError as e:
                self.say(f"chatterd API: {e}")
                time.sleep(POLL)
                continue
            with self.lock:
                self.peers = {
                    n: (m["state"], m["tags"].get("http", "")) for n, m in members.items() if n != self.node.name
                }
                self.holder = row["holder"] if row else None
                if row:
                    self.top_epoch = max(self.top_epoch, int(row["epoch"]))
                held = bool(row and row["held_here"])
                if held and self.epoch is None:
                    assert row is not None
                    self.epoch = int(row["epoch"])
                    self.acked.clear()
                    self.say(f"promoted: primary at epoch {self.epoch}, seq {len(self.log)}")
                elif not held and self.epoch is not None:
                    self.say(f"no longer primary (holder {self.holder}): dropping state to catch up again")
                    self.epoch = None
                    self.log, self.data, self.by_id = [], {}, {}
                    self.in_sync = False
                    self.withdraw()
                if self.epoch is not None and time.monotonic() - last_push >= PUSH_EVERY:
                    last_push = time.monotonic()
                    self.replicate(wait=False)
            if self.in_sync and not self.candidate:
                try:
                    self.node.set_tags(CANDIDACY)
                    self.candidate = True
                    self.say("candidate for primary")
                except OSError:
                    pass
            time.sleep(POLL)

    def step_down(self) -> None:
        """Stopping: serve nothing more as primary, before chatterd leaves and the standby is
        promoted (an update in flight is not acknowledged: the client retries it there)."""
        with self.lock:
            if self.epoch is not None:
                self.say(f"stepping down as primary at epoch {self.epoch}")
            self.epoch = None

    def withdraw(self) -> None:
        try:
            self.node.set_tags({}, delete=list(CANDIDACY))
            self.candidate = False
        except OSError:
            pass


def make_handler(rep: Replica) -> type[JsonHandler]:
    class Handler(JsonHandler):
        def do_GET(self) -> None:
            if self.path == "/state":
                self.reply(200, rep.state())
            else:
                self.reply(404, {"error": "not found"})

        def do_POST(self) -> None:
            try:
                body = self.read_json()
            except ValueError:
                self.reply(400, {"error": "invalid JSON"})
                return
            if self.path == "/update":
                try:
                    self.reply(200, rep.update(str(body["id"]), str(body["key"]), body.get("value")))
                except NotPrimary:
                    self.reply(503, {"error": "not primary", "primary": rep.holder})
                except KeyError as e:
                    self.reply(400, {"error": f"missing {e}"})
            elif self.path == "/replicate":
                self.reply(*rep.receive(body))
            else:
                self.reply(404, {"error": "not found"})

    return Handler


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, required=True, help="gossip (UDP) and API (TCP) port of its chatterd")
    ap.add_argument("--http-port", type=int, required=True, help="the service's HTTP port")
    ap.add_argument("--join", action="append", default=[], help="HOST:PORT of a node to join (repeatable)")
    ap.add_argument("--bootstrap", action="store_true", help="first start of the system: empty state is complete")
    ap.add_argument("--log", type=Path, help="chatterd's log file")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM: same clean stop as Ctrl-C
    # Ctrl-C even when started with SIGINT ignored (a job a script put in the background)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    tags = {"http": f"{HOST}:{args.http_port}", **(CANDIDACY if args.bootstrap else {})}
    node = Sidecar(args.name, args.port, join=args.join, tags=tags, log_path=args.log)
    rep = Replica(node, candidate=args.bootstrap)
    server = ThreadingHTTPServer((HOST, args.http_port), make_handler(rep))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        node.start()
        node.wait_ready()
        how = "bootstrap: candidate" if args.bootstrap else "catching up before it is a candidate"
        rep.say(f"chatterd on {node.addr}, service on {HOST}:{args.http_port} ({how})")
        rep.watch()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        rep.say("stopping: leaving the cluster")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        rep.stopping.set()
        rep.step_down()
        node.stop()
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
