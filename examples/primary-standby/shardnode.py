"""A replica of the sharded key-value service: it holds a copy of every shard and serves the
shards whose chatter role (``shard-0`` ... ``shard-S-1``, balanced roles) it holds.

    cd examples/primary-standby
    python3 shardnode.py --name r1 --port 7101 --http-port 7201 --bootstrap
    python3 shardnode.py --name r2 --port 7102 --http-port 7202 --join 127.0.0.1:7101 --bootstrap
    python3 shardnode.py --name r3 --port 7103 --http-port 7203 --join 127.0.0.1:7101 --bootstrap

HTTP (JSON) on --http-port:
  POST /update     {"id", "key", "value"}: the primary of the key's shard stamps it (epoch, seq),
                   applies it, pushes it to every other live replica, then answers {"shard", "seq",
                   "epoch", "by"}; a repeated id gets the first answer (idempotent retries). A
                   replica that does not serve the key's shard answers 503 {"shard", "primary"}.
  POST /replicate  a shard's primary → the other replicas: {"shard", "epoch", "start",
                   "primary_seq", "entries"} (shardlog.py: fencing, terms). 409 from a stale epoch.
  GET  /state      candidate, and each shard's role, epoch, seq, in_sync, data and log.

Every replica is a candidate for all the shards with one tag (``roles:shard-0..S-1``): chatter
spreads them evenly over the live candidates, moves only a dead node's shards when it dies, and
gives a joining candidate its share. A replica becomes a candidate only once it has caught up on
every shard: ``--bootstrap`` (first start of the system: empty is complete), or after a restart,
once each shard's primary has pushed it the whole log. It never withdraws: a replica that loses
a shard keeps serving its others, and its copy of the lost one is replaced by the new primary's.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from jsonhttp import JsonHandler
from shardlog import NotPrimary, ShardLog, role_of, shard_of
from sidecar import HOST, Sidecar, http_json

POLL = 0.05  # chatterd API polling
PUSH_EVERY = 0.2  # a primary's catch-up push to the other replicas
HEARTBEAT_EVERY = 1.0  # ... and to those already up to date
LIVE = ("alive", "suspect")  # member states a primary waits for before acknowledging


def candidacy(shards: int) -> dict[str, str]:
    """The tag that makes a replica a candidate for every shard (balanced roles)."""
    return {f"roles:{role_of(0)}..{shards - 1}": "0"}


class ShardNode:
    def __init__(self, node: Sidecar, shards: int, candidate: bool) -> None:
        self.node = node
        self.shards = [ShardLog(i, node.name, in_sync=candidate) for i in range(shards)]
        self.candidate = candidate
        self.peers: dict[str, str] = {}  # live replicas but us: name → http address
        self.stopping = threading.Event()

    def say(self, text: str) -> None:
        print(f"{self.node.name}: {text}", flush=True)

    def live_peers(self) -> dict[str, str]:
        return self.peers

    def push(self, name: str, http: str, body: dict[str, Any]) -> dict[str, Any]:
        r: dict[str, Any] = http_json(f"http://{http}/replicate", body, timeout=1.0)
        return r

    def update(self, uid: str, key: str, value: Any) -> dict[str, Any]:
        shard = self.shards[shard_of(key, len(self.shards))]
        if self.stopping.is_set():
            raise NotPrimary
        return {"shard": shard.index, **shard.update(uid, key, value, self.live_peers, self.push)}

    def receive(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        code, r = self.shards[int(body["shard"])].receive(body)
        if r.get("caught_up"):
            self.say(f"caught up on {role_of(int(body['shard']))} from {body['from']} at seq {r['seq']}")
        return code, r

    def state(self) -> dict[str, Any]:
        return {
            "name": self.node.name,
            "candidate": self.candidate,
            "shards": {str(s.index): s.state() for s in self.shards},
        }

    # ------------------------------------------------------------ chatter
    def watch(self) -> None:
        """Follow the shard roles and the members in chatterd; push to the other replicas."""
        last_push = last_beat = 0.0
        while not self.stopping.is_set():
            try:
                roles = self.node.roles_now()
                members = self.node.members()
            except (OSError, ValueError) as e:
                self.say(f"chatterd API: {e}")
                time.sleep(POLL)
                continue
            self.peers = {
                n: m["tags"]["http"]
                for n, m in members.items()
                if n != self.node.name and m["state"] in LIVE and m["tags"].get("http")
            }
            for shard in self.shards:
                row = roles.get(role_of(shard.index)) or {}
                change = shard.follow(row.get("holder"), int(row.get("epoch") or 0), bool(row.get("held_here")))
                if change:
                    self.say(change)
            now = time.monotonic()
            if now - last_push >= PUSH_EVERY:
                beat = now - last_beat >= HEARTBEAT_EVERY
                last_push, last_beat = now, (now if beat else last_beat)
                self.push_all(beat)
            self.become_candidate()
            time.sleep(POLL)

    def push_all(self, beat: bool) -> None:
        """Each shard we serve: push what the peers miss (``beat``: to every peer, even up to date)."""
        for shard in self.shards:
            with shard.lock:
                if shard.epoch is None:
                    continue
                behind = {n: h for n, h in self.peers.items() if beat or shard.acked.get(n, -1) < len(shard.log)}
                if behind:
                    shard.replicate(behind.copy, self.push, wait=False)

    def become_candidate(self) -> None:
        if self.candidate or not all(s.in_sync for s in self.shards):
            return
        try:
            self.node.set_tags(candidacy(len(self.shards)))
            self.candidate = True
            self.say(f"caught up on all {len(self.shards)} shards: candidate")
        except OSError:
            pass


def make_handler(rep: ShardNode) -> type[JsonHandler]:
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
            try:
                if self.path == "/update":
                    self.update(body)
                elif self.path == "/replicate":
                    self.reply(*rep.receive(body))
                else:
                    self.reply(404, {"error": "not found"})
            except (KeyError, IndexError, TypeError, ValueError) as e:
                self.reply(400, {"error": f"bad request: {e!r}"})

        def update(self, body: dict[str, Any]) -> None:
            key = str(body["key"])
            try:
                self.reply(200, rep.update(str(body["id"]), key, body.get("value")))
            except NotPrimary:
                shard = rep.shards[shard_of(key, len(rep.shards))]
                self.reply(503, {"error": "not primary", "shard": shard.index, "primary": shard.holder})

    return Handler


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, required=True, help="gossip (UDP) and API (TCP) port of its chatterd")
    ap.add_argument("--http-port", type=int, required=True, help="the service's HTTP port")
    ap.add_argument("--join", action="append", default=[], help="HOST:PORT of a node to join (repeatable)")
    ap.add_argument("--shards", type=int, default=8, help="number of shards (the same on every replica)")
    ap.add_argument("--bootstrap", action="store_true", help="first start of the system: empty state is complete")
    ap.add_argument("--log", type=Path, help="chatterd's log file")
    args = ap.parse_args()
    if not 1 <= args.shards <= 256:
        ap.error("--shards must be within 1..256")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM: same clean stop as Ctrl-C
    # Ctrl-C even when started with SIGINT ignored (a job a script put in the background)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    tags = {"http": f"{HOST}:{args.http_port}", **(candidacy(args.shards) if args.bootstrap else {})}
    node = Sidecar(args.name, args.port, join=args.join, tags=tags, log_path=args.log)
    rep = ShardNode(node, args.shards, candidate=args.bootstrap)
    server = ThreadingHTTPServer((HOST, args.http_port), make_handler(rep))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        node.start()
        node.wait_ready()
        how = "bootstrap: candidate" if args.bootstrap else "catching up on every shard before it is a candidate"
        rep.say(f"chatterd on {node.addr}, service on {HOST}:{args.http_port}, {args.shards} shards ({how})")
        rep.watch()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        rep.say("stopping: leaving the cluster")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        rep.stopping.set()
        node.stop()
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
