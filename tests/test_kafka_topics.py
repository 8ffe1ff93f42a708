"""Topics against a real broker (tansu): the forwarder creates missing ones with
``--kafka-partitions`` and ``--kafka-replication``, and leaves an existing one as it is, with a
warning when it differs from the settings."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.brokers import KafkaBroker, consume
from tests.support import eventually, make_beat, make_events, run_beat

pytestmark = pytest.mark.kafka


@contextlib.asynccontextmanager
async def admin_of(kafka: KafkaBroker) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def _partitions(kafka: KafkaBroker, topic: str) -> list[dict[str, Any]]:
    async with admin_of(kafka) as admin:
        (described,) = await admin.describe_topics([topic])
    partitions: list[dict[str, Any]] = described["partitions"]
    return partitions


async def _forward(tmp_path: Path, kafka: KafkaBroker, count: int, **settings: Any) -> None:
    beat = make_beat(tmp_path, kafka_bootstrap=kafka.bootstrap, kafka_idempotence=False, **settings)
    async with run_beat(beat):
        await beat.pipeline.commit(make_events(count))
        await eventually(
            lambda: beat.forwarder is not None and beat.forwarder.lag == 0,
            what="every event in Kafka",
            timeout=30,
        )


async def test_missing_topics_get_the_configured_partitions(
    tmp_path: Path, kafka: KafkaBroker
) -> None:
    await _forward(tmp_path, kafka, 30, kafka_partitions=3, kafka_replication=1)
    partitions = await _partitions(kafka, "beats.test.c")
    assert len(partitions) == 3
    assert all(len(p["replicas"]) == 1 for p in partitions)
    records = await consume(kafka.bootstrap, "beats.test.c", count=30, timeout=30)
    assert len({r.partition for r in records}) > 1  # keyed records spread over partitions


async def test_an_existing_topic_is_left_as_it_is_with_a_warning(
    tmp_path: Path, kafka: KafkaBroker, caplog: pytest.LogCaptureFixture
) -> None:
    async with admin_of(kafka) as admin:
        await admin.create_topics([NewTopic("beats.test.c", 1, 1)])
    await _forward(tmp_path, kafka, 5, kafka_partitions=3)
    assert len(await _partitions(kafka, "beats.test.c")) == 1
    warnings = [r.getMessage() for r in caplog.records if "exists with" in r.getMessage()]
    assert warnings == [
        "kafka: topic beats.test.c exists with 1 partitions and replication 1 (settings: 3 "
        "and 1); left as it is"
    ]
    assert len(await consume(kafka.bootstrap, "beats.test.c", count=5, timeout=30)) == 5
