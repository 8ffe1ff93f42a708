"""MQTT → beat → Kafka against real Mosquitto and a real Kafka-protocol broker (tansu),
including Kafka outages: connections cut mid-stream, broker killed and restarted."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt
import httpx

from tests.brokers import KafkaBroker, MosquittoBroker, consume
from tests.hivemq.test_mqtt_beat import hivemq_beat, publisher, ready
from tests.proxy import CuttableProxy
from tests.support import eventually, free_port, read_sse, run_beat

TOPIC = "beats.hivemq.messages"


async def publish(client: aiomqtt.Client, numbers: range, *, pause: float = 0.0) -> None:
    for n in numbers:
        await client.publish("test/k", json.dumps({"n": n}), qos=1)
        if pause:
            await asyncio.sleep(pause)


def numbers(records: list[Any]) -> set[int]:
    return {json.loads(r.value)["data"]["n"] for r in records}


async def test_events_reach_kafka_with_key_header_and_cloudevent_value(
    tmp_path: Path, mosquitto: MosquittoBroker, kafka: KafkaBroker
) -> None:
    beat = hivemq_beat(
        tmp_path, mosquitto, kafka_bootstrap=kafka.bootstrap, kafka_idempotence=False
    )
    async with run_beat(beat) as base:
        await ready(base)
        async with publisher(mosquitto) as client:
            await publish(client, range(50))
        records = await consume(kafka.bootstrap, TOPIC, count=50)
        await eventually(lambda: beat.forwarder is not None and beat.forwarder.lag == 0)
    assert numbers(records) == set(range(50))
    first = records[0]
    event = json.loads(first.value)
    assert first.key == b"test/k" == event["partitionkey"].encode()
    assert dict(first.headers)["content-type"] == b"application/cloudevents+json"
    assert event["specversion"] == "1.0" and event["sequence"] == 1
    assert [json.loads(r.value)["sequence"] for r in records] == list(range(1, 51))


async def test_kafka_down_at_start_lags_then_catches_up(
    tmp_path: Path, mosquitto: MosquittoBroker, kafka: KafkaBroker
) -> None:
    kafka.stop()
    beat = hivemq_beat(
        tmp_path,
        mosquitto,
        kafka_bootstrap=kafka.bootstrap,
        kafka_idempotence=False,
        kafka_timeout=2.0,
    )
    async with run_beat(beat) as base, httpx.AsyncClient() as http:
        await ready(base)  # Kafka down does not make the beat unready
        async with publisher(mosquitto) as client:
            await publish(client, range(20))
        sse = await read_sse(f"{base}/events?last_event_id=0", count=20)
        assert len(sse) == 20  # SSE is not held back by Kafka
        report = (await http.get(f"{base}/readyz")).json()
        assert report["kafka"]["connected"] is False
        assert report["kafka"]["lag"] == 20
        assert report["kafka"]["last_error"]
        kafka.start()
        records = await consume(kafka.bootstrap, TOPIC, count=20, timeout=40)
        metrics = (await http.get(f"{base}/metrics")).text
    assert numbers(records) == set(range(20))
    assert "beats_kafka_errors_total" in metrics
    assert beat.metrics.kafka_errors.labels("KafkaConnectionError")._value.get() >= 1


async def test_kafka_connections_cut_mid_stream_lose_nothing(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """The network to Kafka disappears while events flow; the broker keeps its data."""
    proxy = CuttableProxy(target_port=free_port())
    workdir = tmp_path / "kafka"
    workdir.mkdir()
    broker = KafkaBroker(workdir, advertised_port=proxy.port)
    proxy.target_port = broker.port
    broker.start()
    await proxy.start()
    beat = hivemq_beat(
        tmp_path,
        mosquitto,
        kafka_bootstrap=broker.bootstrap,
        kafka_idempotence=False,
        kafka_timeout=2.0,
        kafka_batch=20,
    )
    try:
        async with run_beat(beat) as base:
            await ready(base)
            async with publisher(mosquitto) as client:
                await publish(client, range(100), pause=0.005)
                await proxy.cut()
                await publish(client, range(100, 200), pause=0.005)
                await asyncio.sleep(2)
                await proxy.start()
                await publish(client, range(200, 300), pause=0.005)
            sse = await read_sse(f"{base}/events?last_event_id=0", count=300)
            records = await consume(broker.bootstrap, TOPIC, count=300, timeout=60)
    finally:
        await proxy.cut()
        broker.kill()
    assert {m.json()["data"]["n"] for m in sse} == set(range(300))
    assert numbers(records) == set(range(300))
    assert beat.metrics.kafka_errors._metrics, "the outage was not counted"


async def test_kafka_killed_and_restarted_catches_up(
    tmp_path: Path, mosquitto: MosquittoBroker, kafka: KafkaBroker
) -> None:
    """kill -9 of the broker; events keep coming from MQTT; after the restart every event
    committed meanwhile is in Kafka (tansu keeps nothing across a restart, so only the events
    after the kill can be checked there; the ones before were consumed before the kill)."""
    beat = hivemq_beat(
        tmp_path,
        mosquitto,
        kafka_bootstrap=kafka.bootstrap,
        kafka_idempotence=False,
        kafka_timeout=2.0,
    )
    async with run_beat(beat) as base:
        await ready(base)
        async with publisher(mosquitto) as client:
            await publish(client, range(50))
            before = await consume(kafka.bootstrap, TOPIC, count=50)
            kafka.kill()
            await publish(client, range(50, 150), pause=0.002)
            await eventually(lambda: beat.log.head == 150, what="all committed while Kafka is dead")
            assert beat.forwarder is not None and beat.forwarder.lag >= 100
            kafka.start()
            after = await consume(kafka.bootstrap, TOPIC, count=100, timeout=60)
    assert numbers(before) == set(range(50))
    assert numbers(after) >= set(range(50, 150))


async def test_dead_letters_get_their_own_topic(
    tmp_path: Path, mosquitto: MosquittoBroker, kafka: KafkaBroker
) -> None:
    beat = hivemq_beat(
        tmp_path,
        mosquitto,
        kafka_bootstrap=kafka.bootstrap,
        kafka_idempotence=False,
        max_payload_bytes=10,
    )
    async with run_beat(beat) as base:
        await ready(base)
        async with publisher(mosquitto) as client:
            await client.publish("test/big", b"x" * 100, qos=1)
        records = await consume(kafka.bootstrap, "beats.hivemq.deadletter", count=1)
    event = json.loads(records[0].value)
    assert event["type"] == "beats.hivemq.deadletter"
    assert "exceeds 10" in event["data"]["reason"]
