"""A 3-node chatter cluster on loopback: gossip a message, kill a node, watch it be declared dead.

    python3 examples/demo.py

Starts three chatterd processes (127.0.0.1, free ports), posts the chatter-rs README's
examples with chatter-inject, shows what each node delivered, kills one node with SIGKILL
and shows every survivor's view of it. Every process is stopped by PID at the end; the nodes'
logs go to a new temporary directory, whose path is printed first and last, and are kept.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import trio

from chatterd.testing import LocalCluster, local_cluster

MESSAGES = [
    {"DebugMessage": {"text": "hello world"}},
    {
        "DeviceGossip": {
            "DeviceAdded": {
                "origin": "541b10e7-d13a-45e8-8567-7d450ce86603",
                "name": "gateway",
                "description": "ASUS Router model RT-N55U ",
            }
        }
    },
]


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


async def show_members(cluster: LocalCluster) -> None:
    for node in cluster.running():
        states = await cluster.states(node)
        print(f"  {node.name} sees: " + ", ".join(f"{k}={v}" for k, v in sorted(states.items())))


async def main() -> None:
    log_dir = Path(tempfile.mkdtemp(prefix="chatter-demo-"))
    say(f"starting 3 chatterd nodes on 127.0.0.1 (logs in {log_dir})")
    t0 = time.monotonic()
    async with local_cluster(3, log_dir=log_dir) as cluster:
        for n in cluster.nodes:
            print(f"  {n.name}: udp+http {n.addr} (pid {n.pid}, log {n.log_path.name})")
        print(f"  converged in {time.monotonic() - t0:.2f} s")
        await show_members(cluster)

        for i, msg in enumerate(MESSAGES):
            target = cluster.nodes[i % 3]
            text = json.dumps(msg)
            say(f"chatter-inject {target.addr} '{text}'")
            r = await trio.run_process([sys.executable, "-m", "chatter_inject", target.addr, text], capture_stdout=True)
            mid, acked_by = r.stdout.decode().split()
            print(f"  accepted by {acked_by} as message {mid}")
            await trio.sleep(0.2)
            for node in cluster.nodes:
                ev = [e for e in await node.events() if e["id"] == mid]
                when = f"{(ev[0]['received_at'] - ev[0]['sent_at']) * 1000:.1f} ms after it was sent" if ev else "-"
                print(f"  {node.name} delivered it {len(ev)} time(s), {when}")

        say("device table on n1 (GET /v1/devices)")
        print("  " + json.dumps(await cluster.nodes[1].get("/v1/devices")))

        victim = cluster.nodes[2]
        say(f"kill -9 {victim.name} (pid {victim.pid})")
        t_kill = time.time()
        victim.kill(signal.SIGKILL)
        took = await cluster.wait_state(victim.name, "dead", timeout=15)
        print(f"  every survivor marked {victim.name} dead within {took:.2f} s of polling")
        for node in cluster.running():
            ev = [e for e in await node.events() if e["kind"] == "member-failed" and e["origin"] == victim.name]
            print(f"  {node.name}: member-failed {ev[0]['received_at'] - t_kill:.2f} s after the kill")
        await show_members(cluster)
        say("stopping the remaining nodes")
    print(f"  done; logs kept in {log_dir}")


if __name__ == "__main__":
    trio.run(main)
