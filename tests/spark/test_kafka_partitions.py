"""``format("beats-kafka")`` over a 3-partition topic filled by a beat's Kafka forwarder: every
event arrives exactly once, each key's events in their order, and each Kafka partition is an
input partition of its own (one Spark task each, read in parallel by the executors)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import functions as sf
from pyspark.sql.streaming.datasource import ReadAllAvailable

from common.envelope import new_event
from spark_receiver import parse_kafka
from spark_receiver.kafka import BeatsKafkaStreamReader, KafkaRange
from tests.brokers import KafkaBroker
from tests.spark.streams import Collector
from tests.spark.test_kafka import create_topic
from tests.support import eventually, make_beat, run_beat

pytestmark = [pytest.mark.spark, pytest.mark.slow]

TOPIC = "beats.test.c"
KEYS = [f"device-{n}" for n in range(12)]
EVENTS = 360


def keyed_events(count: int) -> list[Any]:
    """``count`` events over :data:`KEYS` in turn, numbered per key in ``data.n``."""
    return [
        new_event(
            beat="test",
            type="beats.test.thing",
            source="test://",
            channel="c",
            partitionkey=KEYS[n % len(KEYS)],
            subject=KEYS[n % len(KEYS)],
            data={"n": n // len(KEYS)},
        )
        for n in range(count)
    ]


def read_all(spark: Any, bootstrap: str, sink: Collector, ckpt: Path) -> None:
    raw = (
        spark.readStream.format("beats-kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("subscribe", TOPIC)
        .option("maxOffsetsPerTrigger", "150")
        .load()
        .withColumn("task", sf.spark_partition_id())
    )
    query = (
        parse_kafka(raw, keep=("partition", "offset", "task"))
        .writeStream.foreachBatch(sink)
        .option("checkpointLocation", str(ckpt))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination(180)
    if query.exception() is not None:
        raise AssertionError(str(query.exception()))


async def filled_topic(tmp_path: Path, kafka: KafkaBroker) -> list[Any]:
    """The topic with 3 partitions, holding :func:`keyed_events` as the forwarder produced them."""
    await asyncio.to_thread(create_topic, kafka.bootstrap, TOPIC, 3)
    beat = make_beat(tmp_path, kafka_bootstrap=kafka.bootstrap, kafka_idempotence=False)
    events = keyed_events(EVENTS)
    async with run_beat(beat):
        await beat.pipeline.commit(events)
        await eventually(lambda: beat.forwarder is not None and beat.forwarder.lag == 0)
    return events


def check_exactly_once(rows: list[dict[str, Any]], events: list[Any]) -> None:
    ids = [row["id"] for row in rows]
    lost = {e.id for e in events} - set(ids)
    duplicated = len(ids) - len(set(ids))
    print(f"beats-kafka over 3 partitions: {len(rows)} rows, {len(lost)} lost, {duplicated} dup")
    assert not lost and not duplicated and len(rows) == EVENTS


def check_key_order(rows: list[dict[str, Any]]) -> None:
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_key[row["partitionkey"]].append(row)
    assert sorted(by_key) == sorted(KEYS)
    for key, mine in by_key.items():
        assert len({row["partition"] for row in mine}) == 1, f"{key} is in several partitions"
        in_offset_order = sorted(mine, key=lambda row: row["offset"])
        assert [row["data"] for row in in_offset_order] == [
            f'{{"n":{n}}}' for n in range(EVENTS // len(KEYS))
        ], f"{key} out of order"
    assert {row["partition"] for row in rows} == {0, 1, 2}, "every partition holds some"


def check_one_task_per_partition(batches: dict[int, list[dict[str, Any]]]) -> None:
    """In every micro-batch, the Spark tasks and the Kafka partitions match one to one."""
    widest = 0
    for batch_id, batch in batches.items():
        tasks: dict[int, set[int]] = defaultdict(set)
        for row in batch:
            tasks[row["task"]].add(row["partition"])
        assert all(len(parts) == 1 for parts in tasks.values()), f"batch {batch_id}: {tasks}"
        assert len(tasks) == len({row["partition"] for row in batch}), f"batch {batch_id}"
        widest = max(widest, len(tasks))
    assert widest == 3, "a batch with records in every partition reads them in 3 tasks"


async def test_every_event_once_in_key_order_one_task_per_partition(
    spark: Any, tmp_path: Path, kafka: KafkaBroker
) -> None:
    events = await filled_topic(tmp_path, kafka)
    sink = Collector()
    await asyncio.to_thread(read_all, spark, kafka.bootstrap, sink, tmp_path / "ckpt")
    check_exactly_once(sink.rows(), events)
    check_key_order(sink.rows())
    assert len(sink.batches) >= 3, "maxOffsetsPerTrigger 150 over 360 records"
    check_one_task_per_partition(sink.batches)


async def test_the_reader_plans_one_input_partition_per_kafka_partition(
    tmp_path: Path, kafka: KafkaBroker
) -> None:
    await filled_topic(tmp_path, kafka)
    reader = BeatsKafkaStreamReader(
        {"kafka.bootstrap.servers": kafka.bootstrap, "subscribe": TOPIC}
    )
    try:
        start = await asyncio.to_thread(reader.initialOffset)
        end = await asyncio.to_thread(reader.latestOffset, start, ReadAllAvailable())
    finally:
        reader.stop()
    planned = reader.partitions(start, end)
    assert all(isinstance(part, KafkaRange) for part in planned)
    assert sorted((p.topic, p.partition) for p in planned) == [(TOPIC, n) for n in range(3)]
    assert sum(p.end - p.start for p in planned) == EVENTS
    assert all(p.end > p.start for p in planned)
