"""Kafka unavailable for ``BEATS_FAULT_OUTAGE`` seconds under steady load, for every beat.

The beat's only connection to Kafka goes through a TCP proxy that drops every connection and
refuses new ones for the outage (the broker, tansu, keeps nothing across a restart, so killing
it would also erase what it had acknowledged; a kill -9 of the broker itself is covered per beat
in ``tests/hivemq/test_kafka.py``). Proven: SSE keeps flowing during the outage, and afterwards
every event of the log is in Kafka — 0 lost; duplicates (at-least-once) are counted.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.brokers import KafkaBroker
from tests.faults.harness import BEATS, OUTAGE, Report, SseCounter, kafka_sequences, stack
from tests.proxy import CuttableProxy
from tests.support import eventually, free_port

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


@pytest.mark.parametrize("beat", BEATS)
async def test_kafka_outage_loses_nothing_and_sse_keeps_flowing(tmp_path: Path, beat: str) -> None:
    proxy = CuttableProxy(target_port=free_port())
    (tmp_path / "kafka").mkdir()
    kafka = KafkaBroker(tmp_path / "kafka", advertised_port=proxy.port)
    proxy.target_port = kafka.port
    kafka.start()
    await proxy.start()
    try:
        async with stack(beat, tmp_path, kafka=kafka.bootstrap) as running:
            with SseCounter(f"{running.beat.base}/events") as sse:
                await eventually(lambda: len(sse.sequences) >= 20, timeout=30, what="load")
                await proxy.cut()
                during = len(sse.sequences)
                await asyncio.sleep(OUTAGE)
                flowed = len(sse.sequences) - during
                assert await running.kafka_lag() > 0, "the outage did not hold events back"
                await proxy.start()
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
    report = Report(
        f"kafka-outage-{OUTAGE:.0f}s/{beat}", head, len(set(sse.sequences)), sse.gaps,
        kafka=len(found), duplicates=records - len(found), recovery_s=recovery,
        notes={"sse_during_outage": flowed},
    )  # fmt: skip
    print(report.line())
    assert flowed > 0, "SSE stalled while Kafka was away"
    assert not sse.missing(head) and sse.gaps == 0 and sse.duplicates() == 0
    assert set(range(1, head + 1)) <= found, (
        f"lost in Kafka: {sorted(set(range(1, head + 1)) - found)[:10]}"
    )
