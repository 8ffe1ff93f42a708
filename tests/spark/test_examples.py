"""The seeds' analytics end to end on real parts: Mosquitto → HiveMQ beat → Spark
(``format("beats")``) → Kafka (tansu) / SQLite / MQTT alerts back through the beat; the Orion
emulator → FIWARE beat → Spark → write-back → Orion."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sqlite3
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from beats.ditto.emulator import create_app as create_ditto
from beats.fiware.emulator import create_app as create_orion
from beats.hivemq.simulator import readings
from beats.opencti.emulator import create_app as create_opencti
from beats.opencti.scenario import Scenario, stream_event
from common.client import subscribe
from common.envelope import CloudEvent
from examples import fiware_prediction, indicator_scores, monitoring, sensors, twin_alerts
from examples.common import publish_json
from tests.brokers import KafkaBroker, MosquittoBroker
from tests.ditto.test_ditto_beat import api as ditto_api
from tests.ditto.test_ditto_beat import ditto_beat
from tests.ditto.test_ditto_beat import subscribed as subscribed_ditto
from tests.fiware.test_fiware_beat import fiware_beat, subscribed
from tests.hivemq.test_mqtt_beat import hivemq_beat, ready
from tests.opencti.conftest import TOKEN as OPENCTI_TOKEN
from tests.opencti.test_opencti_beat import opencti_beat
from tests.support import eventually, run_beat, serve_app

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


def _room(n: int, temperature: float, pressure: int) -> dict[str, Any]:
    return {
        "id": f"Room{n}",
        "type": "Room",
        "temperature": {"type": "Number", "value": temperature},
        "pressure": {"type": "Number", "value": pressure},
    }


async def _predictions(orion: httpx.AsyncClient, count: int) -> dict[str, float]:
    found: dict[str, float] = {}

    async def landed() -> bool:
        entities = (await orion.get("/v2/entities", params={"type": "Room"})).json()
        found.clear()
        found.update(
            {e["id"]: e["predictedTemperature"]["value"] for e in entities
             if "predictedTemperature" in e}
        )  # fmt: skip
        return len(found) == count

    await eventually(landed, timeout=120, what="predictions written back")
    return found


async def test_seed_003_predictions_round_trip_through_the_fiware_beat(
    spark: Any, tmp_path: Path
) -> None:
    readings = {1: (19.5, 1000), 2: (23.0, 1025), 3: (21.2, 1013)}
    model = fiware_prediction.train()
    app = create_orion()
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as orion:
        beat = fiware_beat(
            tmp_path, url, watched_attributes=["temperature", "pressure"], writeback_token="wb"
        )
        async with run_beat(beat) as base:
            await subscribed(beat)
            query = await asyncio.to_thread(
                fiware_prediction.start, spark, feed_url=f"{base}/events/entities",
                beat_url=base, token="wb", checkpoint=tmp_path / "ckpt", trigger="1 second",
            )  # fmt: skip
            try:
                for n, (t, p) in readings.items():
                    (await orion.post("/v2/entities", json=_room(n, t, p))).raise_for_status()
                first = await _predictions(orion, 3)
                changed = {"temperature": {"type": "Number", "value": 26.0}}
                await orion.patch("/v2/entities/Room2/attrs", json=changed)
                readings[2] = (26.0, 1025)
                await eventually(
                    lambda: _room2_updated(orion, first["Room2"]), timeout=120, what="Room2"
                )
                second = await _predictions(orion, 3)
                head = beat.log.head
                await asyncio.sleep(3)  # predictions written back must not come back as changes
                assert beat.log.head == head == 4
            finally:
                await asyncio.to_thread(query.stop)
    for n, (t, p) in readings.items():
        law = 0.9 * t + 0.02 * (p - 1013) + 2.1
        assert second[f"Room{n}"] == pytest.approx(round(float(model.predict([[t, p]])[0]), 2))
        assert second[f"Room{n}"] == pytest.approx(law, abs=0.15)
    assert first["Room2"] != second["Room2"]


async def _room2_updated(orion: httpx.AsyncClient, old: float) -> bool:
    entity = (await orion.get("/v2/entities/Room2")).json()
    return bool(entity["predictedTemperature"]["value"] != old)


async def test_ditto_engine_temperatures_over_the_threshold_are_stored_once(
    spark: Any, tmp_path: Path
) -> None:
    thing, db = "org.works.cars:car-9", tmp_path / "alerts.sqlite"
    engine = f"/api/2/things/{thing}/features/engine/properties/temperature"
    app = create_ditto(token="jwt-1")
    async with serve_app(app) as url:
        beat = ditto_beat(tmp_path, url)
        async with run_beat(beat) as base:
            await subscribed_ditto(beat)
            query = await asyncio.to_thread(
                twin_alerts.start, spark, feed_url=f"{base}/events/twin", db=db,
                checkpoint=tmp_path / "ckpt", trigger="1 second",
            )  # fmt: skip
            try:
                body = {"features": {"engine": {"properties": {"temperature": 20.0}}}}
                await ditto_api(url, "PUT", f"/api/2/things/{thing}", json=body)
                for value in (90.0, 110.5, 95.0, 120.0, 100.0):
                    await ditto_api(url, "PUT", engine, json=value)
                await eventually(lambda: len(alerts(db)) == 2, timeout=120, what="two alerts")
                await asyncio.sleep(2)  # later batches add nothing
            finally:
                await asyncio.to_thread(query.stop)
    assert [(t, temp) for t, _, temp in alerts(db)] == [(thing, 110.5), (thing, 120.0)]
    revisions = [revision for _, revision, _ in alerts(db)]
    assert revisions == sorted(revisions) and revisions[1] - revisions[0] == 2


def alerts(db: Path) -> list[tuple[str, int, float]]:
    with closing(sqlite3.connect(db)) as conn, contextlib.suppress(sqlite3.OperationalError):
        query = "SELECT thing_id, revision, temperature FROM alerts ORDER BY revision"
        return [(str(a), int(b), float(c)) for a, b, c in conn.execute(query)]
    return []


async def test_opencti_indicator_counts_per_minute_and_score_band(
    spark: Any, tmp_path: Path
) -> None:
    scenario, db = Scenario(seed=11), tmp_path / "indicators.sqlite"
    frames = [stream_event("create", *scenario.indicator()) for _ in range(30)]
    frames += [stream_event("create", *scenario.malware()) for _ in range(3)]
    app = create_opencti(token=OPENCTI_TOKEN, heartbeat_interval=0.5)
    async with serve_app(app) as url:
        beat = opencti_beat(tmp_path, url)
        async with run_beat(beat) as base:
            query = await asyncio.to_thread(
                indicator_scores.start, spark, feed_url=f"{base}/events/indicators", db=db,
                checkpoint=tmp_path / "ckpt", trigger="1 second",
            )  # fmt: skip
            try:
                async with httpx.AsyncClient(base_url=url) as emulator:
                    added = await emulator.post("/admin/events", json=[{"data": f} for f in frames])
                    added.raise_for_status()
                feed = subscribe(f"{base}/events/indicators", last_event_id=0)
                seen = [e for e in await take_events(feed, 30) if isinstance(e, CloudEvent)]
                expected = Counter(
                    (minute(e), indicator_scores.band(e.data["opencti"]["score"])) for e in seen
                )
                await eventually(
                    lambda: sum(stored_counts(db).values()) == 30, timeout=120, what="counts"
                )
            finally:
                await asyncio.to_thread(query.stop)
    assert stored_counts(db) == dict(expected)
    assert {band for _, band in expected} >= {"low", "high"}


def minute(event: CloudEvent) -> str:
    assert event.time is not None
    return event.time.replace(second=0, microsecond=0, tzinfo=None).isoformat()


def stored_counts(db: Path) -> dict[tuple[str, str], int]:
    with closing(sqlite3.connect(db)) as conn, contextlib.suppress(sqlite3.OperationalError):
        rows = conn.execute("SELECT window_start, band, count FROM indicator_counts")
        return {(str(w), str(b)): int(n) for w, b, n in rows}
    return {}


async def take_events(items: AsyncGenerator[Any, None], count: int) -> list[Any]:
    got: list[Any] = []
    async with asyncio.timeout(30), contextlib.aclosing(items):
        async for item in items:
            got.append(item)
            if len(got) == count:
                break
    return got
