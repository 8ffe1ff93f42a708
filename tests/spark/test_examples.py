"""The seeds' analytics end to end on real parts: Mosquitto → HiveMQ beat → Spark
(``format("beats")``) → Kafka (tansu) / SQLite / MQTT alerts back through the beat."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from beats.hivemq.simulator import readings
from common.client import subscribe
from common.envelope import CloudEvent
from examples import monitoring, sensors
from examples.common import publish_json
from tests.brokers import KafkaBroker, MosquittoBroker
from tests.hivemq.test_mqtt_beat import hivemq_beat, ready
from tests.support import eventually, run_beat

pytestmark = [pytest.mark.spark, pytest.mark.slow]


async def read_counts(bootstrap: str, topic: str, want: int, timeout: float) -> dict[str, Any]:
    """Latest value per key of ``topic`` once ``want`` distinct keys arrived."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    latest: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout):
            while len(latest) < want:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    for record in batch:
                        latest[record.key.decode()] = json.loads(record.value)
    finally:
        await consumer.stop()
    return latest


async def test_seed_002_error_counts_match_an_independent_count(
    spark: Any, tmp_path: Path, mosquitto: MosquittoBroker, kafka: KafkaBroker
) -> None:
    events = monitoring.generate(1500)
    expected = monitoring.expected_counts(events)
    assert len({start for start, _ in expected}) >= 5, "the data should close several windows"
    beat = hivemq_beat(tmp_path, mosquitto, mqtt_topic=["monitoring/#"])
    async with run_beat(beat) as base:
        await ready(base)
        query = await asyncio.to_thread(
            monitoring.start,
            spark,
            feed_url=f"{base}/events/messages",
            kafka_bootstrap=kafka.bootstrap,
            checkpoint=tmp_path / "ckpt",
            trigger="1 second",
            idempotence=False,
        )
        try:
            await asyncio.to_thread(monitoring.publish, mosquitto.url, events)
            got = await read_counts(kafka.bootstrap, monitoring.TOPIC, len(expected), 120)
        finally:
            await asyncio.to_thread(query.stop)
    want = {monitoring.window_key(start, code): n for (start, code), n in expected.items()}
    assert {key: value["count"] for key, value in got.items()} == want
    sample = got[min(got)]
    assert sample["window_end"] > sample["window_start"] and sample["error_code"] in sample["key"]
    assert Counter(e["type"] for e in events)["ERROR"] > sum(want.values())  # last window open


async def test_seed_004_outliers_are_flagged_alerted_and_stored(
    spark: Any, tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    generated = list(itertools.islice(readings(stations=3, outlier_rate=0.05, seed=4), 240))
    injected = {(r.sensor_id, r.ts.isoformat(), m) for r in generated for m in r.outliers}
    flagged = {
        (r.sensor_id, r.ts.isoformat(), m) for r in generated for m in sensors.outliers_of(r.values)
    }
    assert len(injected) >= 5 and injected <= flagged
    db = tmp_path / "sensors.sqlite"
    beat = hivemq_beat(tmp_path, mosquitto, mqtt_topic=["city/#"])
    async with run_beat(beat) as base:
        await ready(base)
        alerts = asyncio.create_task(
            take_alerts(subscribe(f"{base}/events/messages", last_event_id=0), len(flagged))
        )
        query = await asyncio.to_thread(
            sensors.start,
            spark,
            feed_url=f"{base}/events/messages",
            mqtt_url=mosquitto.url,
            db=db,
            checkpoint=tmp_path / "ckpt",
            trigger="1 second",
        )
        try:
            messages = [(f"city/sensors/{r.sensor_id}", r.payload()) for r in generated]
            await asyncio.to_thread(publish_json, mosquitto.url, messages)
            fed = await asyncio.wait_for(alerts, 120)
            await eventually(lambda: stored(db) == len(generated), timeout=60, what="storage")
        finally:
            await asyncio.to_thread(query.stop)
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT sensor_id, ts, outliers FROM readings").fetchall()
        table = conn.execute("SELECT sensor_id, metric, n, total FROM stats").fetchall()
    assert {(s, ts, m) for s, ts, out in rows for m in out.split(",") if m} == flagged
    assert {(a["sensor_id"], a["ts"], a["metric"]) for a in fed} == flagged
    assert len(table) == 3 * len(sensors.METRICS)
    for sensor_id, metric, n, total in table:
        values = [r.values[metric] for r in generated if r.sensor_id == sensor_id]
        assert n == len(values) == 80
        assert total / n == pytest.approx(sum(values) / len(values))


def stored(db: Path) -> int:
    with closing(sqlite3.connect(db)) as conn, contextlib.suppress(sqlite3.OperationalError):
        return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])
    return 0


async def take_alerts(items: AsyncIterator[Any], count: int) -> list[dict[str, Any]]:
    """Alerts the HiveMQ beat carries (subject ``city/alerts/...``) until ``count`` arrived."""
    alerts: list[dict[str, Any]] = []
    async for item in items:
        if isinstance(item, CloudEvent) and (item.subject or "").startswith("city/alerts/"):
            alerts.append(item.data)
            if len(alerts) == count:
                return alerts
    return alerts
