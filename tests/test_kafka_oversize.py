"""Events too large for Kafka, against a real broker (tansu): the forwarder carries on past
them, produces a stand-in record in their place, logs and counts them; SSE keeps them whole."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError

from common.envelope import new_event
from common.eventlog import EventLog, StoredEvent
from common.kafka import OVERSIZE_HEADER, KafkaForwarder, record_size
from common.metrics import Metrics
from common.settings import BeatSettings
from tests.brokers import KafkaBroker, consume
from tests.support import eventually, make_beat, make_events, read_sse, run_beat

pytestmark = pytest.mark.kafka

MIB = 1 << 20


def _big(n: int, *, pad: int, subject: str | None = None) -> Any:
    return new_event(
        beat="test", type="beats.test.big", source="test://", channel="c", partitionkey=f"k{n}",
        subject=subject or f"s{n}", data={"n": n, "pad": "x" * pad}, tlp="amber",
    )  # fmt: skip


async def test_oversize_events_become_counted_stand_ins_and_the_rest_flows(
    tmp_path: Path, kafka: KafkaBroker, caplog: pytest.LogCaptureFixture
) -> None:
    beat = make_beat(tmp_path, kafka_bootstrap=kafka.bootstrap, kafka_idempotence=False)
    events = [
        *make_events(5),
        _big(100, pad=600 * 1024),  # above the producer's batch size, below the request size
        _big(101, pad=3 * MIB // 2),  # 1.5 MiB: above --kafka-max-request-size (1 MiB)
        *make_events(5, start=5),
        _big(102, pad=2 * MIB, subject="s" * 100_000),  # a huge attribute too
        *make_events(5, start=10),
    ]
    async with run_beat(beat) as base:
        for event in events:
            await beat.pipeline.commit([event])
        records = await consume(kafka.bootstrap, "beats.test.c", count=len(events), timeout=30)
        assert beat.forwarder is not None
        await eventually(lambda: beat.forwarder is not None and beat.forwarder.lag == 0)
        sse = await read_sse(f"{base}/events?last_event_id=0", count=len(events))
        oversize = beat.metrics.kafka_oversize.labels("c")._value.get()
        errors = [
            sample
            for metric in beat.metrics.registry.collect()
            if metric.name == "beats_kafka_errors"
            for sample in metric.samples
            if sample.name.endswith("_total")
        ]
    values = [json.loads(r.value) for r in records]
    assert [v["sequence"] for v in values] == list(range(1, len(events) + 1))  # order kept
    assert [v["id"] for v in values] == [e.id for e in events]
    assert values[5]["data"]["pad"] == "x" * 600 * 1024  # a large event that fits goes whole
    for position, event in ((6, events[6]), (12, events[12])):
        stand_in, record = values[position], records[position]
        assert "data" not in stand_in and "datacontenttype" not in stand_in
        assert stand_in["type"] == "beats.test.big" and stand_in["tlp"] == "amber"
        assert stand_in["oversize"] > MIB == beat.settings.kafka_max_request_size
        assert f"Last-Event-ID: {position}" in stand_in["oversizenote"]
        assert dict(record.headers)[OVERSIZE_HEADER] == str(stand_in["oversize"]).encode()
        assert record.key == event.partitionkey.encode()
        assert len(record.value) < 4096
    assert values[6]["subject"] == "s101" and "subject" not in values[12]  # too long to keep
    assert oversize == 2 and errors == []  # no error, no retry: nothing got stuck
    assert sum("larger than Kafka takes" in r.getMessage() for r in caplog.records) == 2
    assert [json.loads(m.data)["data"]["n"] for m in sse][6] == 101  # SSE has it whole
    assert len(sse[12].data) > 2 * MIB


class _RefusingProducer:
    """Stands for a broker whose message.max.bytes is below the producer's limit: it refuses
    every record above ``limit`` with MESSAGE_TOO_LARGE (tansu has no such limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sent: list[bytes] = []

    async def send(self, topic: str, *, value: bytes, key: bytes, headers: Any) -> Any:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if len(value) > self.limit:
            future.set_exception(MessageSizeTooLargeError())
        else:
            self.sent.append(value)
            future.set_result(None)
        return future


async def test_a_broker_refusal_marks_the_event_and_the_retry_sends_a_stand_in(
    tmp_path: Path,
) -> None:
    settings = BeatSettings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path)
    log = EventLog(tmp_path / "unused.db")  # not opened: _produce does not touch it
    forwarder = KafkaForwarder(beat="test", log=log, settings=settings, metrics=Metrics("test"))
    body = b'{"id":"e2","type":"t","sequence":2,"data":"' + b"x" * 200_000 + b'"}'
    batch = [StoredEvent(1, "c", "t", "k", b'{"id":"e1"}'), StoredEvent(2, "c", "t", "k", body)]
    assert record_size(b"k", body, []) < settings.kafka_max_request_size
    producer = _RefusingProducer(100_000)
    with pytest.raises(MessageSizeTooLargeError):
        await forwarder._produce(producer, batch)
    await forwarder._produce(producer, batch)
    stand_in = json.loads(producer.sent[-1])
    assert stand_in["id"] == "e2" and stand_in["sequence"] == 2 and "data" not in stand_in
    assert forwarder.metrics.kafka_oversize.labels("c")._value.get() == 1
