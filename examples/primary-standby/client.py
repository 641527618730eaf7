"""The client: sends updates to whichever replica holds the chatter role ``primary``.

    python3 examples/primary-standby/client.py --nodes 127.0.0.1:7101,127.0.0.1:7102 set colour blue
    python3 examples/primary-standby/client.py --nodes ... get [colour]
    python3 examples/primary-standby/client.py --nodes ... stream --count 200 --interval 0.05

It asks any replica's chatterd (``--nodes``: their chatterd addresses) who holds the role
and where its service is (the member tag ``http``), and posts the update there. A failed
request (connection refused, timeout, 503 from a replica that is not primary, an answer cut
short by a node that is leaving) is retried against the primary found again, with the same
update id, until acknowledged: the id makes a retry that the first attempt already applied a
no-op, so nothing is lost and nothing applied twice.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sidecar import http_json

ROLE = "primary"
# a request that failed and is worth retrying elsewhere: refused, timed out, an HTTP error
# status (urllib's HTTPError is an OSError), or an answer cut short or garbled by a process
# that is going away (a chatterd leaving after its replica died: IncompleteRead, BadStatusLine,
# truncated JSON)
FAILED = (OSError, ValueError, http.client.HTTPException)


class Client:
    def __init__(self, nodes: list[str], timeout: float = 30.0) -> None:
        self.nodes = nodes
        self.timeout = timeout

    def find_primary(self) -> tuple[str, str] | None:
        """(name, service address) of the holder, as any reachable chatterd sees it."""
        for addr in self.nodes:
            try:
                rows = http_json(f"http://{addr}/v1/roles", timeout=1.0)
                if not isinstance(rows, list):  # an empty answer from a node going away
                    continue
                roles = {r["role"]: r for r in rows}
                holder = roles.get(ROLE, {}).get("holder")
                if not holder:
                    continue
                rows = http_json(f"http://{addr}/v1/members", timeout=1.0)
                if not isinstance(rows, list):
                    continue
                members = {m["name"]: m for m in rows}
                m = members.get(holder)
                if m and m["state"] == "alive" and m["tags"].get("http"):
                    return holder, m["tags"]["http"]
            except FAILED:
                continue
        return None

    def update(self, key: str, value: Any, uid: str | None = None) -> dict[str, Any]:
        """Send until acknowledged; returns the answer plus attempts and the time of the ack."""
        uid = uid or uuid.uuid4().hex
        deadline = time.monotonic() + self.timeout
        attempts = 0
        while time.monotonic() < deadline:
            target = self.find_primary()
            if target is not None:
                attempts += 1
                try:
                    r = http_json(f"http://{target[1]}/update", {"id": uid, "key": key, "value": value}, timeout=3.0)
                    if isinstance(r, dict):
                        return {**r, "id": uid, "attempts": attempts, "acked_at": time.time()}
                except FAILED:
                    pass  # refused, timed out, 503 (not primary), cut short: find the primary again
            time.sleep(0.05)
        raise TimeoutError(f"update {uid} not acknowledged within {self.timeout:g} s")

    def states(self) -> list[dict[str, Any]]:
        out = []
        for addr in self.nodes:
            try:
                for m in http_json(f"http://{addr}/v1/members", timeout=1.0):
                    if m["state"] == "alive" and m["tags"].get("http"):
                        out.append(http_json(f"http://{m['tags']['http']}/state", timeout=1.0))
                return out
            except OSError:
                continue
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", required=True, help="chatterd addresses of the replicas, comma-separated")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("set", help="set KEY to VALUE")
    s.add_argument("key")
    s.add_argument("value")
    g = sub.add_parser(
        "get", aliases=["get_state"], help="every replica's value of KEY (or its whole state: the seed's get_state)"
    )
    g.add_argument("key", nargs="?")
    st = sub.add_parser("stream", help="updates u1..uN, one every --interval seconds")
    st.add_argument("--count", type=int, default=100)
    st.add_argument("--interval", type=float, default=0.05)
    st.add_argument("--prefix", default=uuid.uuid4().hex[:6], help="update ids are PREFIX-I (default: random)")
    st.add_argument("--record", type=Path, help="append one JSON line per acknowledged update")
    args = ap.parse_args()
    client = Client(args.nodes.split(","))
    if args.cmd == "set":
        r = client.update(args.key, args.value)
        print(f"{args.key}={args.value}: seq {r['seq']} epoch {r['epoch']} by {r['by']} ({r['attempts']} attempts)")
    elif args.cmd in ("get", "get_state"):
        for state in client.states():
            shown = state["data"].get(args.key) if args.key else state["data"]
            print(f"{state['name']} ({state['role']}, seq {state['seq']}): {json.dumps(shown)}")
    else:
        record = open(args.record, "a") if args.record else None
        try:
            for i in range(1, args.count + 1):
                sent = time.time()
                r = client.update(f"u{i:05d}", i, uid=f"{args.prefix}-{i}")
                line = {**r, "i": i, "sent_at": sent}
                note = f"  (retried: {r['attempts']} attempts)" if r["attempts"] > 1 else ""
                print(f"u{i:05d}: seq {r['seq']} epoch {r['epoch']} by {r['by']}{note}", flush=True)
                if record is not None:
                    record.write(json.dumps(line) + "\n")
                    record.flush()
                time.sleep(args.interval)
        finally:
            if record is not None:
                record.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
