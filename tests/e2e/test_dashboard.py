"""The dashboard (GET /): its files are served, and in headless Chromium it follows the cluster live."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from browser_helpers import MISSING, chromium_paths, headless_chromium
from e2e_helpers import wait_until
from selenium.webdriver.remote.webdriver import WebDriver

from chatterd.testing import ClusterFactory, LocalCluster

pytestmark = pytest.mark.e2e

STATIC = Path(__file__).resolve().parents[2] / "chatterd" / "static"
PAGE_TIMEOUT = 30.0  # generous: the page redraws at each member event, a failure is declared in ~2.5 s


async def test_dashboard_files_are_served(chatter_cluster_factory: ClusterFactory) -> None:
    cluster = await chatter_cluster_factory(1)
    async with httpx.AsyncClient(timeout=5.0) as client:
        url = cluster.nodes[0].url
        page = await client.get(url + "/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.content == (STATIC / "index.html").read_bytes()
        refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sorted(refs) == ["/static/app.js", "/static/style.css"]
        for ref, mime in [("/static/app.js", "javascript"), ("/static/style.css", "text/css")]:
            r = await client.get(url + ref)
            assert r.status_code == 200, ref
            assert mime in r.headers["content-type"], (ref, r.headers["content-type"])
            assert r.content == (STATIC / Path(ref).name).read_bytes(), ref
        assert (await client.get(url + "/static/missing.js")).status_code == 404
        assert (await client.get(url + "/static/../api.py")).status_code == 404
        # Works offline: no file refers to another host (no URL, no CSS import or url()).
        for f in STATIC.iterdir():
            assert re.search(r"https?:|@import|url\(", f.read_text()) is None, f


# The page redraws its tables at each event and every 5 s, so element handles go stale: read the DOM in one
# script call, which runs between two redraws.
STATES_JS = "return Array.from(document.querySelectorAll('#members tbody tr'), r => [r.dataset.name, r.dataset.state])"
FEED_JS = (
    "return Array.from(document.querySelectorAll('#events li'), e => [e.dataset.kind, e.dataset.origin, e.innerText])"
)
TEXT_JS = "return document.querySelector(arguments[0]).textContent"
ATTR_JS = "return document.querySelector(arguments[0]).getAttribute(arguments[1])"
BACKGROUND_JS = "return getComputedStyle(document.querySelector(arguments[0])).backgroundColor"


ROLES_JS = """return [...document.querySelectorAll('#roles tbody tr')].map(
    tr => [tr.dataset.role, tr.dataset.holder, tr.children[2].textContent])"""


async def _script(browser: WebDriver, script: str, *args: str) -> Any:
    return await trio.to_thread.run_sync(lambda: browser.execute_script(script, *args))


async def _states(browser: WebDriver) -> dict[str, str]:
    return dict(await _script(browser, STATES_JS))


async def _feed(browser: WebDriver) -> list[tuple[str, str, str]]:
    return [tuple(item) for item in await _script(browser, FEED_JS)]


@pytest.mark.skipif(chromium_paths() is None, reason=MISSING)
@pytest.mark.chatter_cluster(3, args=["--role", "web:1"])
async def test_dashboard_shows_a_killed_node_dead(chatter_cluster: LocalCluster) -> None:
    n0, _, n2 = chatter_cluster.nodes
    with headless_chromium() as browser:
        await trio.to_thread.run_sync(browser.get, n0.url + "/")

        async def all_alive() -> bool:
            return await _states(browser) == {"n0": "alive", "n1": "alive", "n2": "alive"}

        await wait_until(all_alive, PAGE_TIMEOUT, "the page to show n0, n1, n2 alive")
        assert await _script(browser, TEXT_JS, "#self-name") == "n0"
        assert await _script(browser, "return document.title") == "chatter: n0"
        status = await _script(browser, ATTR_JS, "#health", "data-status")
        assert status in ("ok", "degraded"), status  # the node's /v1/health, as read by the page

        n2.kill()
        assert await n2.wait_exit() == -signal.SIGKILL

        async def n2_dead() -> bool:
            return (await _states(browser)).get("n2") == "dead"

        await wait_until(n2_dead, PAGE_TIMEOUT, "the page to show n2 dead")
        assert await _states(browser) == {"n0": "alive", "n1": "alive", "n2": "dead"}
        assert await _script(browser, BACKGROUND_JS, 'tr[data-name="n2"] .badge') == "rgb(198, 40, 40)"  # red
        assert await _script(browser, BACKGROUND_JS, 'tr[data-name="n1"] .badge') == "rgb(31, 143, 58)"  # green

        # The failure is in the feed, once, without reloading the page.
        async def failure_in_feed() -> bool:
            return any(k == "member-failed" and o == "n2" for k, o, _ in await _feed(browser))

        await wait_until(failure_in_feed, PAGE_TIMEOUT, "the feed to show n2's failure")

        # The roles table follows the node's /v1/roles: a live holder, never the dead n2.
        async def roles_match() -> bool:
            api = {r["role"]: (r["holder"], r["epoch"]) for r in await n0.get("/v1/roles")}
            page = await _script(browser, ROLES_JS)
            return api.get("web", (None, 0))[0] not in (None, "n2") and page == [["web", *map(str, api["web"])]]

        await wait_until(roles_match, PAGE_TIMEOUT, "the roles table to show web's live holder")
        feed = await _feed(browser)
        failed = [text for kind, origin, text in feed if kind == "member-failed" and origin == "n2"]
        assert len(failed) == 1, feed
        assert "n2 dead" in failed[0], failed
        assert any(k == "member-join" for k, _, _ in feed), feed
        # Newest first: the failure comes before the joins it follows.
        kinds = [k for k, _, _ in feed]
        assert kinds.index("member-failed") < max(i for i, k in enumerate(kinds) if k == "member-join"), kinds
