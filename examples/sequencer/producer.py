"""The seed's producer: a numbered stream of orders to the gateway.

    python3 examples/sequencer/producer.py [--gateway 127.0.0.1:8080] [--count 1000] [--rate 50] [--start 1]

Sends ``POST /order {"id": N}`` for N = start .. start+count-1, one at a time, at most
``--rate`` a second, and waits for each answer before the next (so the ids reach the log in
order). An order the gateway could not place (504, or the gateway unreachable) is sent again
until it is acknowledged: a retry is never written twice (the engine answers "duplicate").
Prints a line when the engine or epoch taking the orders changes, and a summary at the end.
Exit status 0 once every order is acknowledged.
"""

from __future__ import annotations

import argparse
import sys
import time

import httpx


def send(client: httpx.Client, url: str, order_id: int, give_up: float) -> dict[str, object]:
    """POST the order until the gateway acknowledges it (200); retry after a failure."""
    deadline = time.monotonic() + give_up
    while True:
        try:
            r = client.post(url, json={"id": order_id})
            if r.status_code == 200:
                body: dict[str, object] = r.json()
                return body
            why = f"HTTP {r.status_code} {r.text.strip()[:200]}"
        except (httpx.HTTPError, ValueError) as e:
            why = f"{type(e).__name__}: {e}"
        if time.monotonic() > deadline:
            raise SystemExit(f"producer: order {order_id} not acknowledged within {give_up} s ({why})")
        print(f"producer: order {order_id}: {why}; sending it again", file=sys.stderr, flush=True)
        time.sleep(0.2)


def main() -> int:
    p = argparse.ArgumentParser(description="send a numbered stream of orders to the gateway")
    p.add_argument("--gateway", default="127.0.0.1:8080", help="HOST:PORT of gateway.py (default 127.0.0.1:8080)")
    p.add_argument("--count", type=int, default=1000, help="how many orders (default 1000)")
    p.add_argument("--rate", type=float, default=50.0, help="orders a second at most (default 50; 0: no limit)")
    p.add_argument("--start", type=int, default=1, help="the first order id (default 1)")
    p.add_argument("--give-up", type=float, default=120.0, help="s: exit 1 if an order is not acknowledged by then")
    a = p.parse_args()
    if a.count < 0 or a.rate < 0 or a.rate != a.rate:
        p.error("--count and --rate must be >= 0")
    url = f"http://{a.gateway}/order"
    interval = 1 / a.rate if a.rate else 0.0
    t0 = nxt = time.monotonic()
    last: tuple[object, object] | None = None
    counts = {"appended": 0, "duplicate": 0}
    with httpx.Client(timeout=a.give_up + 5, trust_env=False) as client:
        for order_id in range(a.start, a.start + a.count):
            ack = send(client, url, order_id, a.give_up)
            counts[str(ack["status"])] = counts.get(str(ack["status"]), 0) + 1
            if (ack["engine"], ack["epoch"]) != last:
                last = (ack["engine"], ack["epoch"])
                print(f"[{time.monotonic() - t0:6.2f}s] order {order_id}: engine {ack['engine']}, epoch {ack['epoch']}",
                      flush=True)  # fmt: skip
            nxt = max(nxt + interval, time.monotonic() - interval)
            time.sleep(max(0.0, nxt - time.monotonic()))
    print(
        f"[{time.monotonic() - t0:6.2f}s] {a.count} orders acknowledged ({a.start}..{a.start + a.count - 1}): "
        f"{counts['appended']} appended, {counts['duplicate']} already in the log (a retry after a lost ack)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
