"""Take docs/dashboard.png: the dashboard of a 4-node cluster with devices, after a node was killed.

    python3 examples/dashboard_screenshot.py [OUTPUT.png]

Starts four chatterd processes on 127.0.0.1, posts a debug message, two devices and a user
event with chatter-inject, kills n3 with SIGKILL, waits until n0 says it is dead, then opens
n0's page in headless Chromium (Debian packages chromium and chromium-driver, and selenium)
and saves a screenshot once the page shows n3 dead. Every process is stopped by PID at the end.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import trio

from chatterd.testing import LocalCluster, local_cluster

REPO = Path(__file__).resolve().parents[1]
# The headless-browser helper is test code, not in the wheel: take it from the checkout's tests.
sys.path.insert(0, str(REPO / "tests" / "e2e"))
from browser_helpers import headless_chromium  # noqa: E402

OUTPUT = REPO / "docs" / "dashboard.png"
TIMEOUT = 30.0

GATEWAY = "541b10e7-d13a-45e8-8567-7d450ce86603"
SENSOR = "0f6b6a7e-2b7c-4a52-9d8e-4f1c2a9b7d31"
MESSAGES: list[dict[str, Any]] = [
    {"DebugMessage": {"text": "hello world"}},
    {"DeviceGossip": {"DeviceAdded": {"origin": GATEWAY, "name": "gateway", "description": "ASUS Router RT-N55U"}}},
    {"DeviceGossip": {"DeviceStatus": {"origin": GATEWAY, "name": "gateway", "metrics": {"load": {"Text": "0.3"}}}}},
    {"DeviceGossip": {"DeviceAdded": {"origin": SENSOR, "name": "thermo-2", "description": "greenhouse sensor"}}},
    {"deploy": {"version": "1.2.3"}},
]
PAGE_SHOWS_N3_DEAD = (
    "return document.querySelector('tr[data-name=\"n3\"][data-state=dead]') !== null"
    " && document.querySelector('#events li[data-kind=\"member-failed\"]') !== null"
    " && document.querySelectorAll('#devices tbody tr').length === 2"
)


async def inject(addr: str, message: dict[str, Any]) -> None:
    await trio.run_process([sys.executable, "-m", "chatter_inject", addr, json.dumps(message)], capture_stdout=True)


async def wait_dead(cluster: LocalCluster, name: str) -> None:
    async def check() -> bool:
        return (await cluster.states(cluster.nodes[0])).get(name) == "dead"

    await cluster.wait_for(check, TIMEOUT)


async def main(output: Path) -> None:
    async with local_cluster(4, extra_args=["--role", "primary:1"]) as cluster:
        n0 = cluster.nodes[0]
        for i, msg in enumerate(MESSAGES):
            await inject(cluster.nodes[i % 4].addr, msg)
            await trio.sleep(0.3)  # distinct timestamps in the feed
        await trio.sleep(1.0)
        cluster.node("n3").kill(signal.SIGKILL)
        await wait_dead(cluster, "n3")
        with headless_chromium(1200, 1100) as browser:
            await trio.to_thread.run_sync(browser.get, n0.url + "/")
            with trio.fail_after(TIMEOUT):
                while not await trio.to_thread.run_sync(browser.execute_script, PAGE_SHOWS_N3_DEAD):
                    await trio.sleep(0.2)
            await trio.sleep(1.5)  # one more redraw, so "last heard" has moved on
            output.parent.mkdir(parents=True, exist_ok=True)
            await trio.to_thread.run_sync(browser.save_screenshot, str(output))
    print(f"saved {output}")


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT)
