"""Headless Chromium for the dashboard's browser tests: Debian's ``chromium`` driven by selenium
through the system ``/usr/bin/chromedriver`` (no Selenium Manager download). ``chrome()`` skips
the calling test when either is absent (``make setup`` installs them where apt is available)."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMEDRIVER = "/usr/bin/chromedriver"
SHOTS = ROOT / "results" / "dashboard"  # screenshots for a person to look at (git-ignored)


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chrome() -> Any:
    """A headless Chromium WebDriver, or ``pytest.skip`` when chromium/chromedriver/selenium are absent."""
    binary = chromium_binary()
    if binary is None or not os.path.exists(CHROMEDRIVER):
        pytest.skip("chromium / chromium-driver not installed (make setup installs them: apt-get install -y "
                    "chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager reach the network
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--disable-extensions", "--no-first-run"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def wait_for(fn: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def page_state(driver: Any) -> dict[str, Any]:
    return driver.execute_script(
        "const d = window.kvlabDashboard; if (!d) return null;"
        "return {mode: d.mode, step: d.step, numBlocks: d.numBlocks, counts: d.counts, requestsShown: d.requestsShown,"
        " sharedBlocks: d.sharedBlocks, crossRequestShared: d.crossRequestShared, seen: d.snapshotsSeen,"
        " frame: d.frame, frames: d.frames, lastDrawMs: d.lastDrawMs, error: d.error};")


METRIC = re.compile(r'^(kvlab:[a-z_]+)(?:\{state="([a-z]+)"\})? ([0-9.e+-]+)$')


def parse_metrics(text: str) -> dict[str, float]:
    """The few /metrics values the page is checked against: steps, blocks total/free, running."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = METRIC.match(line)
        if m:
            name, label, value = m.groups()
            out[f"{name}{'.' + label if label else ''}"] = float(value)
    return out
