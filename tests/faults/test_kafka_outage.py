"""The Kafka broker killed (SIGKILL) for ``BEATS_FAULT_OUTAGE`` seconds under steady load and
restarted on the same port, for every beat.

The broker is tansu storing its records in S3 (moto's S3 server), so what it acknowledged
before the kill is still there after the restart, as with a real Kafka's log directory.
Proven: SSE keeps flowing during the outage, and afterwards every event of the log is in
Kafka — 0 lost; duplicates (at-least-once) are counted.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.brokers import KafkaBroker, S3Server
from tests.faults.harness import BEATS, OUTAGE, Report, SseCounter, kafka_sequences, stack
from tests.support import eventually

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


@pytest.mark.parametrize("beat", BEATS)
async def test_kafka_killed_loses_nothing_and_sse_keeps_flowing(tmp_path: Path, beat: str) -> None:
    (tmp_path / "s3").mkdir()
    (tmp_path / "kafka").mkdir()
    s3 = S3Server(tmp_path / "s3")
    kafka = KafkaBroker(tmp_path / "kafka", s3=s3)
    s3.start()
    kafka.start()
    try:
        async with stack(beat, tmp_path, kafka=kafka.bootstrap) as running:
            with SseCounter(f"{running.beat.base}/events") as sse:
                await eventually(lambda: len(sse.sequences) >= 20, timeout=30, what="load")
                kafka.kill()
                during = len(sse.sequences)
                await asyncio.sleep(OUTAGE)
                flowed = len(sse.sequences) - during
                assert await running.kafka_lag() > 0, "the outage did not hold events back"
                kafka.start()
                restored = time.monotonic()
                running.stop_load()
                head = await running.head()

                async def caught_up() -> bool:
                    return await running.kafka_lag() == 0

                await eventually(caught_up, timeout=60, what="Kafka caught up")
                recovery = time.monotonic() - restored
                await sse.wait_for(head)
            found, records = await kafka_sequences(kafka.bootstrap, beat, until=head)
    finally:
        kafka.kill()
        s3.kill()
    report = Report(
        f"kafka-killed-{OUTAGE:.0f}s/{beat}", head, len(set(sse.sequences)), sse.gaps,
        kafka=len(found), duplicates=records - len(found), recovery_s=recovery,
        notes={"sse_during_outage": flowed},
    )  # fmt: skip
    print(report.line())
    assert flowed > 0, "SSE stalled while Kafka was away"
    assert not sse.missing(head) and sse.gaps == 0 and sse.duplicates() == 0
    assert set(range(1, head + 1)) <= found, (
        f"lost in Kafka: {sorted(set(range(1, head + 1)) - found)[:10]}"
    )
