"""Take docs/dashboard.png: the dashboard of a 3-node cluster with a role, after its holder was killed.

    python3 examples/dashboard_screenshot.py [OUTPUT.png]

Starts three chatterd processes on 127.0.0.1, candidates for the role ``primary`` with
priorities 1, 2 and 3 (n2 holds it), posts a debug message, two devices and a user event
with chatter-inject, opens n0's page in headless Chromium (Debian packages chromium and
chromium-driver, and selenium), kills n2 with SIGKILL and saves a screenshot once the page,
live from the event stream, shows n2 dead and n1 holding the role. Every process is stopped
by PID at the end; the nodes' logs are kept in a temporary directory whose path is printed.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

from chatterd.testing import local_cluster

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
PAGE_SHOWS_FAILOVER = (
    "return document.querySelector('tr[data-name=\"n2\"][data-state=dead]') !== null"
    " && document.querySelector('#events li[data-kind=\"member-failed\"]') !== null"
    " && document.querySelector('tr[data-role=primary][data-holder=n1]') !== null"
    " && document.querySelectorAll('#devices tbody tr').length === 2"
)


async def inject(addr: str, message: dict[str, Any]) -> None:
    await trio.run_process([sys.executable, "-m", "chatter_inject", addr, json.dumps(message)], capture_stdout=True)


async def main(output: Path) -> None:
    log_dir = Path(tempfile.mkdtemp(prefix="chatter-dashboard-"))
    print(f"node logs in {log_dir}")
    # The browser first: its start-up takes the CPU a while, which would make the nodes' timers late.
    with headless_chromium(1200, 1250) as browser:
        async with local_cluster(0, log_dir=log_dir, converge=False) as cluster:
            for prio in (1, 2, 3):
                cluster.add(args=["--role", f"primary:{prio}"])
            await cluster.wait_converged(timeout=TIMEOUT)
            n0 = cluster.nodes[0]
            for i, msg in enumerate(MESSAGES):
                await inject(cluster.nodes[i % 3].addr, msg)
                await trio.sleep(0.3)  # distinct timestamps in the feed
            await trio.to_thread.run_sync(browser.get, n0.url + "/")
            await trio.sleep(2.0)  # the page's first answers, then n2 dies while it watches
            cluster.node("n2").kill(signal.SIGKILL)
            with trio.fail_after(TIMEOUT):
                while not await trio.to_thread.run_sync(browser.execute_script, PAGE_SHOWS_FAILOVER):
                    await trio.sleep(0.2)
            await trio.sleep(1.5)  # the durations move on with the page's clock
            output.parent.mkdir(parents=True, exist_ok=True)
            await trio.to_thread.run_sync(browser.save_screenshot, str(output))
    print(f"saved {output}; node logs kept in {log_dir}")


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT)
