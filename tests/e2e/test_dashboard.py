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
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from chatterd.testing import ClusterFactory

pytestmark = pytest.mark.e2e

STATIC = Path(__file__).resolve().parents[2] / "chatterd" / "static"
PAGE_TIMEOUT = 30.0  # generous: the page redraws at each member event, a failure is declared in ~2.5 s
QUIET_S = 7.0  # longer than the 5 s the page used to poll at: a poll would show


async def test_dashboard_files_are_served(chatter_cluster_factory: ClusterFactory) -> None:
    cluster = await chatter_cluster_factory(1)
    async with httpx.AsyncClient(timeout=5.0) as client:
        url = cluster.nodes[0].url
        page = await client.get(url + "/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.content == (STATIC / "index.html").read_bytes()
        refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sorted(refs) == ["/metrics", "/static/app.js", "/static/style.css"]
        metrics = await client.get(url + "/metrics")  # the page's link to the node's metrics
        assert metrics.status_code == 200 and "chatter_members" in metrics.text
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


# The page redraws its tables at each event, so element handles go stale: read the DOM in one
# script call, which runs between two redraws.
STATES_JS = "return Array.from(document.querySelectorAll('#members tbody tr'), r => [r.dataset.name, r.dataset.state])"
VISIBLE_JS = "return Array.from(document.querySelectorAll('#members tbody tr:not([hidden])'), r => r.dataset.name)"
FEED_JS = (
    "return Array.from(document.querySelectorAll('#events li'), e => [e.dataset.kind, e.dataset.origin, e.innerText])"
)
TEXT_JS = "return document.querySelector(arguments[0]).textContent"
SHOWN_JS = "return !document.querySelector(arguments[0]).closest('[hidden]')"
ATTR_JS = "return document.querySelector(arguments[0]).getAttribute(arguments[1])"
BACKGROUND_JS = "return getComputedStyle(document.querySelector(arguments[0])).backgroundColor"
COUNTERS_JS = """return Object.fromEntries(Array.from(document.querySelectorAll('#counters [data-counter]'),
    c => [c.dataset.counter, Number(c.dataset.value)]))"""
ROLES_JS = """return [...document.querySelectorAll('#roles tbody tr')].map(
    tr => [tr.dataset.role, tr.dataset.holder, tr.children[2].textContent, tr.querySelector('.here').dataset.why])"""
# The page's fetches from the API (the browser's own record, not the page's): one per table it
# asked for (the event stream is no fetch).
FETCHES_JS = """return performance.getEntriesByType('resource')
    .filter(e => e.initiatorType === 'fetch' && new URL(e.name).pathname.startsWith('/v1/')).length"""
PLACEHOLDERS = ("#counters-empty", "#members-empty", "#roles-empty", "#devices-empty")


async def _script(browser: WebDriver, script: str, *args: str) -> Any:
    return await trio.to_thread.run_sync(lambda: browser.execute_script(script, *args))


async def _states(browser: WebDriver) -> dict[str, str]:
    return dict(await _script(browser, STATES_JS))


async def _feed(browser: WebDriver) -> list[tuple[str, str, str]]:
    return [tuple(item) for item in await _script(browser, FEED_JS)]


async def _type_filter(browser: WebDriver, text: str) -> list[str]:
    """Type ``text`` into the members' filter box (as a person would), and read the rows left."""

    def type_() -> None:
        box = browser.find_element(By.ID, "member-filter")
        box.clear()
        box.send_keys(text)

    await trio.to_thread.run_sync(type_)
    if not text:
        await trio.to_thread.run_sync(
            lambda: browser.find_element(By.ID, "member-filter").send_keys(" ", Keys.BACKSPACE)
        )
    return list(await _script(browser, VISIBLE_JS))


async def _loading_before_the_first_answer(browser: WebDriver, url: str) -> None:
    """With the API blocked, the page says "loading…", never "No roles" or "No devices"; once
    unblocked it draws the tables by itself (it reopens the event stream it lost), no reload."""
    await trio.to_thread.run_sync(lambda: browser.execute_cdp_cmd("Network.enable", {}))
    await trio.to_thread.run_sync(lambda: browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/v1/*"]}))
    await trio.to_thread.run_sync(browser.get, url)
    await trio.sleep(1.5)  # time for answers, were any to come
    for sel in PLACEHOLDERS:
        assert await _script(browser, TEXT_JS, sel) == "loading…", sel
        assert await _script(browser, SHOWN_JS, sel), sel
    for table in ("#members", "#roles", "#devices"):
        assert not await _script(browser, SHOWN_JS, table), table
    body = await _script(browser, "return document.body.innerText")
    assert "No roles" not in body and "No devices" not in body, body
    await trio.to_thread.run_sync(lambda: browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []}))


@pytest.mark.skipif(chromium_paths() is None, reason=MISSING)
async def test_dashboard_follows_the_cluster_live(chatter_cluster_factory: ClusterFactory) -> None:
    cluster = await chatter_cluster_factory(0, converge=False)
    for prio in (1, 2, 3):  # n2 holds web; n0, its page under test, is outbid
        cluster.add(args=["--role", f"web:{prio}"])
    await cluster.wait_converged(timeout=PAGE_TIMEOUT)
    n0, _, n2 = cluster.nodes
    with headless_chromium() as browser:
        await _loading_before_the_first_answer(browser, n0.url + "/")

        async def all_alive() -> bool:
            return await _states(browser) == {"n0": "alive", "n1": "alive", "n2": "alive"}

        await wait_until(all_alive, PAGE_TIMEOUT, "the page to show n0, n1, n2 alive")
        assert await _script(browser, TEXT_JS, "#self-name") == "n0"
        assert await _script(browser, "return document.title") == "chatter: n0"
        status = await _script(browser, ATTR_JS, "#health", "data-status")
        assert status in ("ok", "degraded"), status  # the node's /v1/health, as read by the page
        assert await _script(browser, TEXT_JS, "#devices-empty") == "No devices."  # answered: none
        assert await _script(browser, ATTR_JS, "#live", "data-live") == "live"

        # The health counters, as the node counts them (the node goes on counting after the page read).
        page_counts = await _script(browser, COUNTERS_JS)
        api_counts = (await n0.get("/v1/health"))["counters"]
        assert 0 < page_counts["datagrams_in"] <= api_counts["datagrams_in"], (page_counts, api_counts)
        assert page_counts["internal_errors"] == api_counts.get("internal_errors", 0) == 0
        # The link to the node's Prometheus metrics.
        href = await _script(browser, "return document.getElementById('metrics-link').href")
        assert href == n0.url + "/metrics"

        # Why n0 does not hold the role, as /v1/roles says.
        async def roles_match(holder: str, why: str) -> bool:
            api = {r["role"]: r for r in await n0.get("/v1/roles")}
            page = await _script(browser, ROLES_JS)
            web = api.get("web", {})
            return (web.get("holder"), web.get("why_not_here")) == (holder, why) and page == [
                ["web", holder, str(web["epoch"]), why]
            ]

        await wait_until(lambda: roles_match("n2", "held by n2: priority 3, ours 1"), PAGE_TIMEOUT, "web held by n2")
        assert "not here: held by n2: priority 3, ours 1" in await _script(browser, TEXT_JS, "#roles tbody")

        # The members' filter: every word must match the name, state, address or a tag.
        assert await _type_filter(browser, "n1") == ["n1"]
        assert await _type_filter(browser, "web=3") == ["n2"]
        assert await _type_filter(browser, f"alive {n0.addr}") == ["n0"]
        assert await _type_filter(browser, "nobody") == []
        assert "0 of 3" in await _script(browser, TEXT_JS, "#member-shown")
        assert await _type_filter(browser, "") == ["n0", "n1", "n2"]

        # Live without polling: while nothing happens, the page asks the node nothing (the old
        # page fetched every 5 s), and its durations still move on.
        await _no_fetch_while_quiet(browser)

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
        # The role went to n1, and n0 says why it is not here.
        await wait_until(lambda: roles_match("n1", "held by n1: priority 2, ours 1"), PAGE_TIMEOUT, "web held by n1")
        counts = await _script(browser, COUNTERS_JS)
        assert counts["deaths"] >= 1 and counts["suspicions"] >= 1, counts
        feed = await _feed(browser)
        failed = [text for kind, origin, text in feed if kind == "member-failed" and origin == "n2"]
        assert len(failed) == 1, feed
        assert "n2 dead" in failed[0], failed
        assert any(k == "member-join" for k, _, _ in feed), feed
        # Newest first: the failure comes before the joins it follows.
        kinds = [k for k, _, _ in feed]
        assert kinds.index("member-failed") < max(i for i, k in enumerate(kinds) if k == "member-join"), kinds


async def _no_fetch_while_quiet(browser: WebDriver) -> None:
    """Over QUIET_S with no event, the page fetches nothing; with events, a few fetches each."""
    since, uptime = 'tr[data-name="n1"] td.since', "#uptime .uptime"
    # Room for every entry (250 by default): a full buffer records nothing more, and would hide a poll.
    await _script(browser, "performance.setResourceTimingBufferSize(100000)")
    fetches, events, before, up = (
        await _script(browser, FETCHES_JS),
        len(await _feed(browser)),
        await _script(browser, TEXT_JS, since),
        await _script(browser, TEXT_JS, uptime),
    )
    await trio.sleep(QUIET_S)
    new_fetches = await _script(browser, FETCHES_JS) - fetches
    new_events = len(await _feed(browser)) - events
    assert new_fetches <= 3 * new_events, (new_fetches, new_events)  # none at all when nothing happened
    assert await _script(browser, TEXT_JS, since) != before  # "in state for" ticks with the page's clock
    assert await _script(browser, TEXT_JS, uptime) != up  # and so does the uptime
