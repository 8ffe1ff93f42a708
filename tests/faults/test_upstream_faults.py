"""The upstream misbehaves under load: the OpenCTI stream drops the connection every N frames;
the MQTT broker restarts (persistent sessions: every acknowledged QoS 1 message arrives).
Real subprocesses; published upstream = what ends up in the log. (An MQTT broker restart is
proven per beat in ``tests/hivemq/test_mqtt_beat.py`` too; the Ditto emulator's drop switch in
``tests/ditto/test_ditto_beat.py``.)"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiomqtt
import pytest

from tests.faults.harness import Report, SseCounter, append_indicators, stack
from tests.support import eventually

pytestmark = pytest.mark.slow


async def test_opencti_stream_dropped_every_50_frames_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    published = 600
    async with stack(
        "opencti", tmp_path, count=published, upstream=("--drop-every", "50")
    ) as running:
        assert running.upstream_url is not None
        started = time.monotonic()
        await append_indicators(running.upstream_url, published)
        with SseCounter(f"{running.beat.base}/events") as sse:
            await eventually(lambda: len(sse.sequences) >= published, timeout=60, what="all")
            elapsed = time.monotonic() - started
            await asyncio.sleep(1)
            head = await running.head()
    report = Report("upstream-drop-every-50/opencti", head, len(set(sse.sequences)), sse.gaps,
                    recovery_s=elapsed, notes={"published": published})  # fmt: skip
    print(report.line())
    assert head == published and not sse.missing(head) and sse.duplicates() == 0


async def _publish_through_restarts(url: str, count: int, acked: set[int]) -> None:
    """QoS 1 readings ``0..count-1`` at about 200/s; a publish that fails (the broker is
    restarting) is retried on a new connection; ``acked`` holds what the broker acknowledged."""
    parts = urlsplit(url)
    n = 0
    while n < count:
        try:
            async with aiomqtt.Client(parts.hostname or "", parts.port or 1883) as client:
                while n < count:
                    await client.publish("city/sensors/fault", json.dumps({"n": n}), qos=1)
                    acked.add(n)
                    n += 1
                    await asyncio.sleep(0.005)
        except aiomqtt.MqttError:
            await asyncio.sleep(0.2)


async def test_mqtt_broker_restarted_loses_no_acknowledged_message(tmp_path: Path) -> None:
    total, acked = 3000, set[int]()
    async with stack("hivemq", tmp_path, count=1) as running:  # the simulator: one reading
        with SseCounter(f"{running.beat.base}/events") as sse:
            publishing = asyncio.create_task(
                _publish_through_restarts(running.broker.url, total, acked)
            )
            await eventually(lambda: len(sse.sequences) >= 300, timeout=30, what="load")
            await asyncio.to_thread(running.broker.restart)
            restarted = time.monotonic()
            before = len(sse.sequences)
            await eventually(lambda: len(sse.sequences) > before, timeout=60, what="flowing")
            recovery = time.monotonic() - restarted
            await asyncio.wait_for(publishing, 120)
            await eventually(lambda: numbers(sse) >= acked, timeout=60, what="every acked one")
            head = await running.head()
            await sse.wait_for(head)
    report = Report("mqtt-broker-restart/hivemq", head, len(set(sse.sequences)), sse.gaps,
                    recovery_s=recovery, notes={"acked": len(acked)})  # fmt: skip
    print(report.line())
    assert len(acked) == total and numbers(sse) >= acked
    assert not sse.missing(head) and sse.duplicates() == 0 and sse.gaps == 0


def numbers(sse: SseCounter) -> set[int]:
    return {
        json.loads(data)["n"] for subject, data in sse.contents if subject == "city/sensors/fault"
    }
