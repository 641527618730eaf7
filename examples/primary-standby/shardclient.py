"""The sharded client: sends each update to the primary of its key's shard.

    python3 examples/primary-standby/shardclient.py --nodes 127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103 routes
    python3 examples/primary-standby/shardclient.py --nodes ... set colour blue
    python3 examples/primary-standby/shardclient.py --nodes ... stream --count 200 --interval 0.05

Routing: shard = crc32(key) mod S (shardlog.shard_of); the primary of shard ``i`` is the holder
of the chatter role ``shard-i``, as any reachable chatterd (``--nodes``) lists it in
``/v1/roles``, and its service address is its member tag ``http``. The client keeps that table
and asks again only when a request fails (refused, timed out, 503 from a replica that no longer
serves the shard, an answer cut short): the update is retried with the same id until
acknowledged, and the id makes a retry that the first attempt already applied a no-op.
Load balancing is by key: the shards, hence the keys, are spread over the primaries.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from shardlog import role_of, shard_of
from sidecar import http_json

FAILED = (OSError, ValueError, http.client.HTTPException)  # worth retrying elsewhere (client.py)


class ShardClient:
    def __init__(self, nodes: list[str], shards: int = 8, timeout: float = 30.0) -> None:
        self.nodes = nodes
        self.shards = shards
        self.timeout = timeout
        self.table: dict[int, tuple[str, str]] = {}  # shard → (holder, its service address)

    def routes(self) -> dict[int, tuple[str, str]]:
        """Each shard's (holder, service address), as the first chatterd that answers sees it
        (shards without a live holder left out)."""
        for addr in self.nodes:
            try:
                roles = http_json(f"http://{addr}/v1/roles", timeout=1.0)
                members = http_json(f"http://{addr}/v1/members", timeout=1.0)
                if not isinstance(roles, list) or not isinstance(members, list):  # a node going away
                    continue
            except FAILED:
                continue
            http = {m["name"]: m["tags"].get("http") for m in members if m["state"] == "alive"}
            rows = {r["role"]: r for r in roles}
            table = {}
            for i in range(self.shards):
                holder = (rows.get(role_of(i)) or {}).get("holder")
                if holder and http.get(holder):
                    table[i] = (holder, http[holder])
            return table
        return {}

    def update(self, key: str, value: Any, uid: str | None = None) -> dict[str, Any]:
        """Send until acknowledged; returns the answer plus attempts and the time of the ack."""
        uid = uid or uuid.uuid4().hex
        shard = shard_of(key, self.shards)
        deadline = time.monotonic() + self.timeout
        attempts = 0
        while time.monotonic() < deadline:
            if shard not in self.table:
                self.table = self.routes()
            target = self.table.get(shard)
            if target is not None:
                attempts += 1
                try:
                    r = http_json(f"http://{target[1]}/update", {"id": uid, "key": key, "value": value}, timeout=3.0)
                    if isinstance(r, dict):
                        return {**r, "id": uid, "key": key, "attempts": attempts, "acked_at": time.time()}
                except FAILED:
                    pass
                self.table.pop(shard, None)  # ask again who serves it
            time.sleep(0.05)
        raise TimeoutError(f"update {uid} (shard {shard}) not acknowledged within {self.timeout:g} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", required=True, help="chatterd addresses of the replicas, comma-separated")
    ap.add_argument("--shards", type=int, default=8)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("routes", help="each shard's primary")
    s = sub.add_parser("set", help="set KEY to VALUE")
    s.add_argument("key")
    s.add_argument("value")
    st = sub.add_parser("stream", help="updates to keys k00001..kN, one every --interval seconds")
    st.add_argument("--count", type=int, default=100)
    st.add_argument("--interval", type=float, default=0.05)
    st.add_argument("--prefix", default=uuid.uuid4().hex[:6], help="update ids are PREFIX-I (default: random)")
    args = ap.parse_args()
    client = ShardClient(args.nodes.split(","), args.shards)
    if args.cmd == "routes":
        for i, (holder, http) in sorted(client.routes().items()):
            print(f"{role_of(i)}: {holder} ({http})")
    elif args.cmd == "set":
        r = client.update(args.key, args.value)
        print(f"{args.key}={args.value}: shard {r['shard']} seq {r['seq']} epoch {r['epoch']} by {r['by']}")
    else:
        for i in range(1, args.count + 1):
            r = client.update(f"k{i:05d}", i, uid=f"{args.prefix}-{i}")
            note = f"  (retried: {r['attempts']} attempts)" if r["attempts"] > 1 else ""
            print(f"k{i:05d}: shard {r['shard']} seq {r['seq']} epoch {r['epoch']} by {r['by']}{note}", flush=True)
            time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
