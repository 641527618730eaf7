"""An order engine: accepts orders only while its chatterd sidecar holds the role ``leader``.

    python3 engine.py --name e1 --port 8001 --sidecar http://127.0.0.1:7001 --log central_order_book.log [--lease-ttl 1]
        [--host 127.0.0.1]

* A thread polls the sidecar's ``GET /v1/roles`` every POLL_S. When the sidecar holds the role
  at a new epoch (the etcd revision of its lock key), the engine writes a fence record for that
  epoch into the order log; from then on it accepts orders stamped with that epoch. If the
  sidecar says it no longer holds the role, or does not answer, the engine stops accepting.
* With ``--lease-ttl T`` (the sidecar's own ``--lease-ttl``), the same thread renews the
  sidecar's lease on the role every T/3 (``POST /v1/roles/leader/lease``, with the token the
  sidecar wrote for its address): the role is offered only while this loop runs, so if the
  app dies or hangs, its sidecar gives the role (and the etcd lock) up within about T even
  though the sidecar itself still runs.
* ``POST /order {"id": N}``: 200 {"status": "appended"|"duplicate", "engine", "epoch"} once the
  order is in the log; 421 {"holder"} when this engine is not the primary; 409 {"holder"} when
  the log holds a higher epoch than ours (we are a stale primary: fenced out); 503 if the log
  stays locked by another engine.
* ``GET /state``: {"name", "accepting_epoch", "holder", "accepted", "stale_rejected"}.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import urllib.request
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # examples/: jsonhttp
from jsonhttp import JsonHandler
from sequencer import HOST, ROLE, OrderLog

from chatterd.httpauth import find_token

POLL_S = 0.05  # s: how often we ask the sidecar whether we hold the role


class Engine:
    def __init__(self, name: str, sidecar: str, log: OrderLog, lease_ttl: float | None = None) -> None:
        self.name = name
        self.sidecar = sidecar
        self.lease_ttl = lease_ttl
        self.renewed_at = 0.0  # monotonic time of the last successful lease renewal
        self.log = log
        self.lock = threading.Lock()
        self.accepting_epoch: int | None = None  # the epoch we accept in; None: not the primary
        self.seen_epoch: int | None = None  # the last epoch the sidecar reported as ours
        self.holder: str | None = None  # the holder the sidecar knows of (a hint for the gateway)
        self.accepted = 0
        self.stale_rejected = 0

    def renew_lease(self) -> None:
        """Renew the sidecar's lease on the role if a third of its TTL has passed (a failed
        renewal is tried again on the next poll; two more chances before the lease runs out)."""
        if self.lease_ttl is None or time.monotonic() - self.renewed_at < self.lease_ttl / 3:
            return
        host, _, port = self.sidecar.removeprefix("http://").rpartition(":")
        req = urllib.request.Request(self.sidecar + f"/v1/roles/{ROLE}/lease", data=b"", method="POST")
        token = find_token((host, int(port)))
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=0.5) as r:
                r.read()
            self.renewed_at = time.monotonic()
        except (OSError, ValueError) as e:
            print(f"{self.name}: lease renewal failed: {e}", flush=True)

    def poll_forever(self) -> None:
        while True:
            self.renew_lease()
            try:
                with urllib.request.urlopen(self.sidecar + "/v1/roles", timeout=0.5) as r:
                    rows = json.loads(r.read())
                row = next((x for x in rows if x["role"] == ROLE), None)
            except (OSError, ValueError):
                row = None  # no sidecar, no role
            held = row is not None and row["held_here"] and row["epoch"] is not None
            with self.lock:
                self.holder = row["holder"] if row else None
                if not held:
                    if self.accepting_epoch is not None:
                        print(f"{self.name}: stop accepting (epoch {self.accepting_epoch})", flush=True)
                    self.accepting_epoch = self.seen_epoch = None
                elif row is not None and row["epoch"] != self.seen_epoch:
                    self.seen_epoch = epoch = int(row["epoch"])
                    if self.log.fence(self.name, epoch):
                        self.accepting_epoch = epoch
                        print(f"{self.name}: primary, accepting in epoch {epoch}", flush=True)
                    else:
                        self.accepting_epoch = None
                        print(f"{self.name}: epoch {epoch} is already fenced out", flush=True)
            time.sleep(POLL_S)

    def order(self, order_id: int) -> tuple[int, dict[str, Any]]:
        with self.lock:
            epoch, holder = self.accepting_epoch, self.holder
        if epoch is None:
            return 421, {"error": "not the primary", "holder": holder}
        try:
            status = self.log.append(order_id, self.name, epoch)
        except TimeoutError as e:
            return 503, {"error": str(e), "holder": holder}
        if status == "stale":
            with self.lock:
                if self.accepting_epoch == epoch:
                    self.accepting_epoch = None
                self.stale_rejected += 1
            print(f"{self.name}: order {order_id} refused: epoch {epoch} is stale", flush=True)
            return 409, {"error": f"epoch {epoch} is fenced out", "holder": holder}
        with self.lock:
            self.accepted += status == "appended"
        return 200, {"id": order_id, "engine": self.name, "epoch": epoch, "status": status}

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "name": self.name,
                "accepting_epoch": self.accepting_epoch,
                "holder": self.holder,
                "accepted": self.accepted,
                "stale_rejected": self.stale_rejected,
            }


def make_handler(engine: Engine) -> type[JsonHandler]:
    class Handler(JsonHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms stall

        def do_GET(self) -> None:
            if self.path == "/state":
                self.reply(200, engine.state())
            else:
                self.reply(404, {"error": "not found"})

        def do_POST(self) -> None:
            if self.path != "/order":
                self.reply(404, {"error": "not found"})
                return
            try:
                body = self.read_json()
                order_id = int(body["id"])
            except (ValueError, KeyError, TypeError):
                self.reply(400, {"error": 'expected {"id": N}'})
                return
            self.reply(*engine.order(order_id))

    return Handler


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True)
    p.add_argument("--host", default=HOST, help=f"the address to take orders on (default {HOST})")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sidecar", required=True, help="the chatterd HTTP API, e.g. http://127.0.0.1:7001")
    p.add_argument("--log", type=Path, required=True, help="the shared order log")
    p.add_argument(
        "--lease-ttl", type=float, help="renew the sidecar's lease on the role (its --lease-ttl) every TTL/3"
    )
    a = p.parse_args()
    engine = Engine(a.name, a.sidecar, OrderLog(a.log), a.lease_ttl)
    threading.Thread(target=engine.poll_forever, name="poll", daemon=True).start()
    server = ThreadingHTTPServer((a.host, a.port), make_handler(engine))
    server.daemon_threads = True
    print(f"{a.name}: orders on http://{a.host}:{a.port}, sidecar {a.sidecar}", flush=True)
    # Ctrl-C (or SIGTERM) ends the engine, even when started with SIGINT ignored (a job a
    # script put in the background)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print(f"{a.name}: stopping", flush=True)


if __name__ == "__main__":
    main()
