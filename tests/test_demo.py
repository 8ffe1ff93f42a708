"""``beats demo``: the embedded all-in-one default starts, events flow, Ctrl-C stops it."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support import free_port, read_sse

ROOT = Path(__file__).parent.parent
PROMTOOL = shutil.which("promtool")


def test_demo_serves_every_feed_passes_promtool_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port, threats, cars, city = free_port(), free_port(), free_port(), free_port()
    front = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "beats",
            "demo",
            "--data-dir",
            str(tmp_path / "demo"),
            "--mqtt-port",
            str(free_port()),
            "--hivemq-port",
            str(port),
            "--opencti-port",
            str(threats),
            "--opencti-emulator-port",
            str(free_port()),
            "--threat-rate",
            "20",
            "--ditto-port",
            str(cars),
            "--ditto-emulator-port",
            str(free_port()),
            "--car-interval",
            "0.05",
            "--fiware-port",
            str(city),
            "--orion-emulator-port",
            str(free_port()),
            "--city-interval",
            "0.05",
            "--rate",
            "10",
            "--gateway-port",
            str(front),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        messages = asyncio.run(read_sse(f"{base}/events?last_event_id=0", count=10, timeout=20))
        readings = [m.json() for m in messages]
        assert all(r["type"] == "beats.hivemq.message" for r in readings)
        assert all(r["subject"].startswith("city/sensors/station-") for r in readings)
        assert {"temperature", "humidity", "sensor_id"} <= set(readings[0]["data"])
        intel = asyncio.run(
            read_sse(f"http://127.0.0.1:{threats}/events?last_event_id=0", count=5, timeout=20)
        )
        assert all(m.event.startswith("beats.opencti.") for m in intel)
        twins = asyncio.run(
            read_sse(f"http://127.0.0.1:{cars}/events/twin?last_event_id=0", count=5, timeout=20)
        )
        assert all(m.event.startswith("beats.ditto.twin.") for m in twins)
        rooms = asyncio.run(
            read_sse(
                f"http://127.0.0.1:{city}/events/entities?last_event_id=0", count=5, timeout=20
            )
        )
        assert all(m.event == "beats.fiware.entity" for m in rooms)
        _every_beat_reaches_the_gateway(f"http://127.0.0.1:{front}")
        for service in (port, threats, cars, city, front):
            _metrics_pass_promtool(f"http://127.0.0.1:{service}/metrics")
        process.send_signal(signal.SIGINT)
        assert process.wait(15) == 0
        assert process.stdout is not None
        output = process.stdout.read().decode()
        assert f"curl -N {base}/events" in output
        assert f"curl -N http://127.0.0.1:{front}/streams" in output
    finally:
        if process.poll() is None:
            process.kill()


def _metrics_pass_promtool(url: str) -> None:
    """Prometheus' own linter accepts the exposition, which has the process collectors."""
    assert PROMTOOL is not None, "promtool is missing (Debian: apt-get install prometheus)"
    text = httpx.get(url, timeout=5).text
    for family in ("process_resident_memory_bytes", "process_open_fds", "python_gc_objects"):
        assert family in text, f"{url}: no {family}"
    check = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, f"{url}: {check.stdout}{check.stderr}"


def _every_beat_reaches_the_gateway(gateway: str) -> None:
    beats = {"hivemq", "opencti", "ditto", "fiware"}
    for name in sorted(beats):
        messages = asyncio.run(
            read_sse(f"{gateway}/streams/{name}?last_event_id=0", count=3, timeout=20)
        )
        assert {m.json()["beat"] for m in messages} == {name}
    merged = asyncio.run(read_sse(f"{gateway}/streams", count=40, timeout=20))
    assert {m.json()["beat"] for m in merged} <= beats and len(merged) == 40
    status = httpx.get(f"{gateway}/beats", timeout=5).json()
    assert {b["name"] for b in status["beats"]} == beats
    assert httpx.get(f"{gateway}/", timeout=5).text.count("Works Beats") >= 1
