"""Headless Chromium for the browser tests (Debian's chromium and chromium-driver, Selenium).

``needs_chromium`` skips a test, with the reason, when either is not installed (``.ci/run``
installs them). ``chromium(offline=True)`` reaches nothing beyond this machine: every host name
but ``127.0.0.1`` and ``localhost`` fails to resolve and every other request goes to a proxy
that does not exist, so a page that needs a CDN fails to render.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

__all__ = ["CHROMIUM", "DRIVER", "chromium", "needs_chromium"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="the browser test needs Debian's chromium and chromium-driver (apt-get install "
    "chromium chromium-driver; .ci/run installs them) — not installed here",
)

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
)
_OFFLINE = (
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
    "--proxy-server=http://127.0.0.1:9",  # the discard port: nothing listens
    "--proxy-bypass-list=127.0.0.1;localhost",
)


@contextlib.contextmanager
def chromium(*, offline: bool = False) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or "chromium"
    for flag in (*_FLAGS, *(_OFFLINE if offline else ())):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    try:
        yield driver
    finally:
        driver.quit()
