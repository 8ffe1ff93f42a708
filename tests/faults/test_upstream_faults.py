"""The upstream misbehaves under load: the OpenCTI stream drops the connection every N frames.
Real subprocesses; published upstream = what ends up in the log. (An MQTT broker restart is
proven with an exact count in ``tests/hivemq/test_mqtt_beat.py``; the Ditto emulator's drop
switch in ``tests/ditto/test_ditto_beat.py``.)"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

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
