"""The gateway as its own process, as the seed ran it (``cargo run -- gateway 8080``):

    python3 examples/sequencer/gateway.py 8080 [--cluster FILE | --chatter HOST:PORT ...]

Listens for orders on 127.0.0.1:PORT (``POST /order {"id": N}``, as an engine takes them) and
forwards each to the current primary engine with the in-process ``sequencer.Gateway``: the same
code, so the same rules. It answers the producer only once an engine has acknowledged the order
(200 {"id", "engine", "epoch", "status"}: the order is in the log exactly once), retrying with
the next engine on a failure or a "not me"; it forwards one order at a time (concurrent
requests wait their turn), so no order overtakes another. 504 if no engine took the order
within ``--give-up`` seconds: the producer may send it again, a retry is never written twice.

Where the engines are: no list by hand. Each engine's chatterd sidecar carries the tag
``app=URL`` (its engine app's address), so the gateway asks one sidecar's ``GET /v1/members``
and takes every member with that tag; it asks again every ``--refresh`` seconds, to learn
engines that joined since (an engine that died stays on the list: it is skipped when it fails).
Which sidecar to ask: ``--chatter HOST:PORT`` (its HTTP API, repeatable), else the ones
listed in the cluster file that ``run.py --serve`` writes (``--cluster``, default
``/tmp/chatter-sequencer/cluster.json``).

``GET /state``: {"target", "engines", "forwarded", "switches"}.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # examples/: jsonhttp
from jsonhttp import JsonHandler
from sequencer import APP_TAG, HOST, SERVE_DIR, Gateway

from chatterd import logs

log = structlog.get_logger("sequencer.gateway")


def discover(sidecars: list[str], timeout: float = 1.0) -> dict[str, str]:
    """{engine name: app URL} from the first sidecar that answers ``GET /v1/members``: every
    member tagged ``app=URL``, alive ones first (in name order), then the others."""
    for url in sidecars:
        try:
            rows = httpx.get(url + "/v1/members", timeout=timeout, trust_env=False).json()
        except (httpx.HTTPError, ValueError):
            continue
        tagged = [r for r in rows if APP_TAG in (r.get("tags") or {})]
        tagged.sort(key=lambda r: (r.get("state") != "alive", r["name"]))
        return {r["name"]: r["tags"][APP_TAG] for r in tagged}
    return {}


def sidecars_from(cluster: Path, chatter: list[str]) -> list[str]:
    if chatter:
        return [c if c.startswith("http") else f"http://{c}" for c in chatter]
    try:
        return list(json.loads(cluster.read_text())["chatter"])
    except (OSError, ValueError, KeyError) as e:
        why = f"gateway: no --chatter given and no cluster file {cluster} ({e}); start run.py --serve"
        raise SystemExit(why) from None


class Forwarder:
    """The HTTP side: one order at a time through the shared ``Gateway``."""

    def __init__(self, sidecars: list[str], give_up: float) -> None:
        self.sidecars = sidecars
        self.give_up = give_up
        engines: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while not engines:
            engines = discover(sidecars)
            if not engines and time.monotonic() > deadline:
                raise SystemExit(f"gateway: no engine found through {', '.join(sidecars)} in 30 s")
            time.sleep(0.2 if not engines else 0)
        self.gw = Gateway(engines)
        self.lock = threading.Lock()
        self.forwarded = 0
        self.last: tuple[str, int] | None = None  # (engine, epoch) of the last acknowledgement
        log.info("engines found", engines=engines, asked=sidecars)

    def refresh_forever(self, every: float) -> None:
        while True:
            time.sleep(every)
            found = discover(self.sidecars)
            new = {k: v for k, v in found.items() if self.gw.engines.get(k) != v}
            if new:
                with self.lock:  # a new dict at once: send() never sees a half-updated one
                    self.gw.engines = {**self.gw.engines, **new}
                log.info("engines joined", engines=new)

    def order(self, order_id: int) -> tuple[int, dict[str, Any]]:
        with self.lock:
            try:
                ack = self.gw.send(order_id, give_up=self.give_up)
            except TimeoutError as e:
                log.warning("order not taken", id=order_id, error=str(e))
                return 504, {"error": str(e)}
            self.gw.acks.clear()  # a long-running gateway keeps no history
            self.forwarded += 1
            if self.last != (ack.engine, ack.epoch):
                log.info("primary", engine=ack.engine, epoch=ack.epoch, first_order=order_id, status=ack.status)
                self.last = (ack.engine, ack.epoch)
        return 200, {"id": order_id, "engine": ack.engine, "epoch": ack.epoch, "status": ack.status}

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "target": self.gw.target,
                "engines": self.gw.engines,
                "forwarded": self.forwarded,
                "switches": len(self.gw.switches),
            }


def make_handler(fw: Forwarder) -> type[JsonHandler]:
    class Handler(JsonHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            self.reply(*((200, fw.state()) if self.path == "/state" else (404, {"error": "not found"})))

        def do_POST(self) -> None:
            if self.path != "/order":
                self.reply(404, {"error": "not found"})
                return
            try:
                order_id = int(self.read_json()["id"])
            except (ValueError, KeyError, TypeError):
                self.reply(400, {"error": 'expected {"id": N}'})
                return
            self.reply(*fw.order(order_id))

    return Handler


def main() -> None:
    p = argparse.ArgumentParser(description="forward orders to the primary engine (the seed's gateway)")
    p.add_argument("port", type=int, help="port for orders on 127.0.0.1 (the seed: 8080)")
    p.add_argument("--cluster", type=Path, default=SERVE_DIR / "cluster.json", help="written by run.py --serve")
    p.add_argument("--chatter", action="append", default=[], help="a sidecar's HTTP API HOST:PORT (repeatable)")
    p.add_argument("--give-up", type=float, default=60.0, help="s: answer 504 if no engine takes an order by then")
    p.add_argument("--refresh", type=float, default=2.0, help="s: how often to ask for the engines again")
    a = p.parse_args()
    logs.setup(fmt="console")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per forwarded order
    fw = Forwarder(sidecars_from(a.cluster, a.chatter), a.give_up)
    threading.Thread(target=fw.refresh_forever, args=(a.refresh,), name="refresh", daemon=True).start()
    server = ThreadingHTTPServer((HOST, a.port), make_handler(fw))
    server.daemon_threads = True
    log.info("listening for orders", url=f"http://{HOST}:{a.port}/order")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopped", forwarded=fw.forwarded)


if __name__ == "__main__":
    main()
