"""The dashboard page in real headless Chromium (:mod:`tests.browser`).

Skipped, with the reason, when Chromium or its driver is not installed (``.ci/run`` installs
them). The documentation's screenshot is taken from the demo by ``tests/docs/test_examples.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from gateway.settings import GatewaySettings
from tests.brokers import KafkaBroker
from tests.browser import chromium, needs_chromium
from tests.gateway.support import beat_named, gateway_settings, hivemq_readings, run_gateway
from tests.support import free_port, run_beat

pytestmark = needs_chromium


@contextlib.asynccontextmanager
async def sensor_traffic(beat: Any) -> AsyncIterator[None]:
    """The simulator's readings flowing into the beat (5 per 0.1 s) until the block ends."""

    async def publish() -> None:
        n = 0
        while True:
            await beat.pipeline.commit(hivemq_readings(5, start=n))
            n += 5
            await asyncio.sleep(0.1)

    task = asyncio.create_task(publish(), name="test:sensor-traffic")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _texts(driver: Any, selector: str) -> list[str]:
    """Text of every element matching ``selector``, read in the page in one step (the page
    re-renders twice a second, so element handles would go stale)."""
    script = "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent)"
    texts: list[str] = driver.execute_script(script, selector)
    return texts


def _browse(url: str, tmp_shot: Path) -> dict[str, Any]:
    """Open the dashboard, wait for live data in every part, filter, take the screenshot."""
    with chromium() as driver:
        driver.get(url)
        wait = WebDriverWait(driver, 20, poll_frequency=0.2)
        wait.until(lambda d: _texts(d, "#conn") == ["live"])
        wait.until(lambda d: len(_texts(d, "#events tr")) >= 20)
        wait.until(lambda d: _texts(d, ".card .rate") not in ([], ["0.0/s"]))
        wait.until(lambda d: "station-002" in "".join(_texts(d, "#sensors-legend")))
        wait.until(lambda d: len(d.execute_script("return rateHistory.hivemq || []")) >= 6)
        seen: dict[str, Any] = {
            "types": set(_texts(driver, "#events td:nth-child(4)")),
            "badge": _texts(driver, ".card .badge"),
            "rate": _texts(driver, ".card .rate"),
        }
        driver.save_screenshot(str(tmp_shot))
        driver.find_element(By.ID, "filter").send_keys("station-001")
        seen["filtered"] = _texts(driver, "#events td:nth-child(5)")
        return seen


@pytest.mark.parametrize("mode", ["url", "kafka"])
async def test_dashboard_shows_live_data_in_chromium(
    tmp_path: Path, mode: str, request: pytest.FixtureRequest
) -> None:
    """The same page whether the gateway reads the beat (URL mode) or its topics (Kafka)."""
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text('tokens:\n  - {name: dev, token: dev-token, scopes: ["*"]}\n')
    if mode == "kafka":
        kafka: KafkaBroker = request.getfixturevalue("kafka")
        beat = beat_named(
            tmp_path, "hivemq", kafka_bootstrap=kafka.bootstrap, kafka_partitions=3,
            kafka_idempotence=False,
        )  # fmt: skip
        settings = GatewaySettings(
            port=free_port(), beat=["hivemq"], kafka_bootstrap=kafka.bootstrap,
            tokens_file=tokens, status_interval=0.5,
        )  # fmt: skip
    else:
        beat = beat_named(tmp_path, "hivemq")
        settings = gateway_settings({"hivemq": beat}, tokens_file=tokens, status_interval=0.5)
    async with run_beat(beat), run_gateway(settings) as (_, base), sensor_traffic(beat):
        async with httpx.AsyncClient() as http:
            page = await http.get(f"{base}/")
            assert page.status_code == 200 and "EventSource" in page.text
        shot = tmp_path / "dashboard.png"
        seen = await asyncio.to_thread(_browse, f"{base}/#token=dev-token", shot)
    assert seen["types"] == {"beats.hivemq.message"}
    assert seen["badge"] == ["ready"] and seen["rate"][0].endswith("/s")
    assert seen["filtered"] and all(s.endswith("station-001") for s in seen["filtered"])
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
