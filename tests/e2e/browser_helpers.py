"""Headless Chromium driven by Selenium, for the dashboard test and its screenshot script.

    with headless_chromium() as browser:
        browser.get(node.url + "/")
        rows = browser.find_elements(By.CSS_SELECTOR, "#members tr[data-state=alive]")

Needs the Debian packages ``chromium`` and ``chromium-driver`` and the ``selenium`` module
(the ``test`` extra). Test code, not shipped in the wheel: tests/e2e/test_dashboard.py and
examples/dashboard_screenshot.py (run from a checkout) import it from here. Chromedriver is
started by PID and stopped by PID on the way out, and it takes its Chromium down with it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM_NAMES = ("chromium", "chromium-browser")
PAGE_LOAD_TIMEOUT = 30.0
MISSING = "needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)"


def chromium_paths() -> tuple[str, str] | None:
    """(chromium, chromedriver) executables found on PATH, or None if either is missing."""
    chromium = next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        return None
    return chromium, driver


@contextlib.contextmanager
def headless_chromium(width: int = 1280, height: int = 900) -> Iterator[WebDriver]:
    """A headless Chromium window of ``width`` x ``height`` CSS pixels, quit on the way out."""
    from selenium import webdriver

    paths = chromium_paths()
    if paths is None:
        raise FileNotFoundError(MISSING)
    chromium, driver_path = paths
    options = webdriver.ChromeOptions()
    options.binary_location = chromium  # with the driver's path given too, Selenium Manager downloads nothing
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",  # /dev/shm is small in containers
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    service = webdriver.ChromeService(executable_path=driver_path)
    browser = webdriver.Chrome(options=options, service=service)
    try:
        browser.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
        yield browser
    finally:
        try:
            browser.quit()  # chromedriver closes Chromium, then Selenium stops chromedriver
        finally:
            proc = service.process
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
