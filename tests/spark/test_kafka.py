"""Kafka: ``parse_kafka`` on a DataFrame of Spark's Kafka-source schema gives the same columns
as the SSE source; ``format("beats-kafka")`` reads a beat's topic from a real Kafka-protocol
broker (tansu), batch by batch, and a second run from the checkpoint reads only what is new."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from kafka.admin import KafkaAdminClient, NewTopic  # type: ignore[import-untyped]

from common.envelope import new_event
from spark_receiver import COLUMNS, KAFKA_SCHEMA, event_to_row, parse_kafka
from spark_receiver.kafka import KAFKA_HEADERS, _capped
from tests.brokers import KafkaBroker
from tests.spark.streams import Collector
from tests.support import eventually, make_beat, make_events, run_beat

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def sample_events() -> list[dict[str, Any]]:
    text = new_event(
        beat="hivemq",
        type="beats.hivemq.message",
        source="mqtt://b:1883",
        channel="m",
        partitionkey="t/1",
        subject="t/1",
        data="plain text",
        mqttqos=0,
        mqttretain=True,
        time=dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC),
    )
    nested = new_event(
        beat="hivemq",
        type="beats.hivemq.message",
        source="mqtt://b:1883",
        channel="m",
        partitionkey="t/2",
        data={"a": [1, 2.5, None], "b": {"c": "d"}},
        mqttqos=1,
    )
    binary = new_event(
        beat="hivemq",
        type="beats.hivemq.message",
        source="mqtt://b:1883",
        channel="m",
        partitionkey="t/3",
        data=None,
        data_base64="AAEC",
        datacontenttype="application/octet-stream",
    )
    return [json.loads(e.to_json_with_sequence(n)) for n, e in enumerate([text, nested, binary], 1)]


def test_parse_kafka_matches_the_sse_rows(spark: Any) -> None:
    events = sample_events()
    stamp = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    records = [
        (
            e["partitionkey"].encode(),
            json.dumps(e).encode(),
            "beats.hivemq.m",
            0,
            n,
            stamp,
            0,
            [("content-type", b"application/cloudevents+json")],
        )
        for n, e in enumerate(events)
    ]
    raw = spark.createDataFrame(records, f"{KAFKA_SCHEMA}, {KAFKA_HEADERS}")
    parsed = parse_kafka(raw, keep=("offset",)).orderBy("offset").collect()
    assert [f for f in parsed[0].asDict() if f != "offset"] == COLUMNS
    for row, event in zip(parsed, events, strict=True):
        expected = dict(zip(COLUMNS, event_to_row(event), strict=True))
        got = {name: row[name] for name in COLUMNS}
        if expected["time"] is not None:
            expected["time"] = expected["time"].replace(tzinfo=None)  # session zone is UTC
        assert got == expected
    assert parsed[0]["data"] == '"plain text"' and parsed[2]["data"] is None
    assert parsed[2]["extensions"]["data_base64"] == "AAEC"


def test_capped_offsets_share_the_budget_between_partitions() -> None:
    start = {"t": {"0": 10, "1": 0}}
    latest = {"t": {"0": 100, "1": 3, "2": 50}}
    assert _capped(start, latest, None) == latest
    capped = _capped(start, latest, 30)
    assert capped == {"t": {"0": 20, "1": 3, "2": 17}}
    assert sum(capped["t"][p] - start["t"].get(p, 0) for p in capped["t"]) == 30


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def run_available_now(spark: Any, bootstrap: str, topic: str, sink: Collector, ckpt: Path) -> None:
    raw = (
        spark.readStream.format("beats-kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("subscribe", topic)
        .option("maxOffsetsPerTrigger", "70")
        .load()
    )
    query = (
        parse_kafka(raw, keep=("partition", "offset"))
        .writeStream.foreachBatch(sink)
        .option("checkpointLocation", str(ckpt))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination(120)
    if query.exception() is not None:
        raise AssertionError(str(query.exception()))


async def test_beats_kafka_source_reads_a_beat_topic(
    spark: Any, tmp_path: Path, kafka: KafkaBroker
) -> None:
    topic, ckpt = "beats.test.c", tmp_path / "ckpt"
    await asyncio.to_thread(create_topic, kafka.bootstrap, topic, 2)
    beat = make_beat(tmp_path, kafka_bootstrap=kafka.bootstrap, kafka_idempotence=False)
    async with run_beat(beat):
        await beat.pipeline.commit(make_events(150))
        await eventually(lambda: beat.forwarder is not None and beat.forwarder.lag == 0)
        first = Collector()
        await asyncio.to_thread(run_available_now, spark, kafka.bootstrap, topic, first, ckpt)
        await beat.pipeline.commit(make_events(40, start=150))
        await eventually(lambda: beat.forwarder is not None and beat.forwarder.lag == 0)
        second = Collector()
        await asyncio.to_thread(run_available_now, spark, kafka.bootstrap, topic, second, ckpt)
    rows = first.rows() + second.rows()
    assert sorted(r["sequence"] for r in first.rows()) == list(range(1, 151))
    assert sorted(r["sequence"] for r in second.rows()) == list(range(151, 191))
    assert len({(r["partition"], r["offset"]) for r in rows}) == 190
    assert {r["partition"] for r in rows} == {0, 1}
    assert all(len(batch) <= 70 for batch in first.batches.values())
    assert {r["type"] for r in rows} == {"beats.test.thing"}
