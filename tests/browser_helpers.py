"""A real headless browser for the tests: Debian's chromium through its chromium-driver and Selenium.

Nothing downloads a browser. Without chromium and chromedriver on the PATH the browser tests skip with the
reason, unless CI=true, where they fail (.ci/run installs them).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.chrome.webdriver import WebDriver

FLAGS = ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps", "--lang=en-US"]  # fmt: skip


def browser_paths() -> tuple[str, str]:
    """Chromium and its driver from the PATH; skipped without them, failed on CI (CI=true)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    reason = "no chromium and chromedriver on the PATH (Debian: apt-get install chromium chromium-driver)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must provide them (.ci/run installs them).")
    pytest.skip(reason)


def open_browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium with its console and network logs kept; the driver is the system's, never a download."""
    chromium, driver = browser_paths()
    options = Options()
    options.binary_location = chromium
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = DriverService(executable_path=driver, log_output=str(tmp_path / "chromedriver.log"))
    chrome = webdriver.Chrome(options=options, service=service)
    yield chrome
    chrome.quit()


def console_errors(browser: WebDriver) -> list[dict]:
    """The console's error entries (uncaught errors, failed loads, policy violations)."""
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def requested(browser: WebDriver) -> list[tuple[str, str]]:
    """(method, URL) of every request the page sent, from Chromium's performance (DevTools) log."""
    messages = [json.loads(entry["message"])["message"] for entry in browser.get_log("performance")]
    return [
        (m["params"]["request"]["method"], m["params"]["request"]["url"])
        for m in messages
        if m["method"] == "Network.requestWillBeSent"
    ]
