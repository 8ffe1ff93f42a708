"""Two HiveMQ beat processes share one MQTT shared subscription on Mosquitto (MQTT 5 and 3.1.1)
and produce into the same Kafka topic (tansu, 3 partitions). One is killed with kill -9 while it
has messages in flight (its log held locked, so it cannot commit nor acknowledge them) and
restarted with the same client id and data directory: its persistent session hands them back,
since Mosquitto does not give a dead member's messages to the other. Nothing is lost; the
duplicates are counted and printed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from common.client import subscribe
from common.envelope import CloudEvent
from tests.brokers import KafkaBroker, MosquittoBroker
from tests.hivemq.test_mqtt_beat import hivemq_beat
from tests.processes import ServiceProcess
from tests.replicas import Tally, beat_state, hivemq_replicas, kill_one_mid_stream, steady_stream
from tests.support import eventually, run_beat

TOTAL = 2000
TOPIC = "beats.hivemq.messages"


@pytest.fixture
def replicas(
    tmp_path: Path, mosquitto: MosquittoBroker, kafka: KafkaBroker, request: pytest.FixtureRequest
) -> Iterator[list[ServiceProcess]]:
    version: str = request.param
    made = hivemq_replicas(
        tmp_path, mosquitto.url, kafka.bootstrap, group="replica", version=version
    )
    yield made
    for process in made:
        process.stop()


async def _log_numbers(base: str) -> list[int]:
    """Every message number in the replica's log, from the start to its head now."""
    head = (await beat_state(base))["head"]
    numbers: list[int] = []
    if head < 1:
        return numbers
    async with contextlib.aclosing(subscribe(f"{base}/events", last_event_id=0)) as feed:
        async for item in feed:
            if isinstance(item, CloudEvent):
                numbers.append(item.data["n"])
                if (item.sequence or 0) >= head:
                    break
    return numbers


async def _kafka_numbers(bootstrap: str, *, timeout: float = 60) -> list[int]:
    """Every message number in the topic (all partitions), once all TOTAL are there."""
    consumer = AIOKafkaConsumer(
        TOPIC, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    numbers: list[int] = []
    try:
        async with asyncio.timeout(timeout):
            while len(set(numbers)) < TOTAL:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    numbers += [json.loads(r.value)["data"]["n"] for r in batch]
    except TimeoutError:
        pass  # the tally says what is missing
    finally:
        await consumer.stop()
    return numbers


@pytest.mark.parametrize("replicas", ["5", "3.1.1"], indirect=True)
async def test_replicas_share_the_feed_and_a_kill_9_loses_nothing(
    replicas: list[ServiceProcess], mosquitto: MosquittoBroker, kafka: KafkaBroker, tmp_path: Path
) -> None:
    for process in replicas:
        await asyncio.to_thread(process.start)
    async with steady_stream(mosquitto, "replica", TOTAL, topics=7) as sending:
        in_flight = await kill_one_mid_stream(replicas, tmp_path / "a")  # restarted with its id
        assert not sending.done(), "the kill and the takeover must happen mid-stream"
    kafka_numbers = await _kafka_numbers(kafka.bootstrap)
    logs = [await _log_numbers(p.base) for p in replicas]
    sse = Tally.of("SSE (union of both logs)", range(TOTAL), *logs)
    in_kafka = Tally.of("Kafka (one topic, 3 partitions)", range(TOTAL), kafka_numbers)
    print(f"\nREPLICAS in flight at the kill: {in_flight}; per replica: {[len(x) for x in logs]}")
    print(sse.line())
    print(in_kafka.line())
    assert min(len(x) for x in logs) >= TOTAL // 10, "the shared subscription split the feed"
    assert not sse.lost, f"lost from SSE: {sse.lost[:20]}"
    assert not in_kafka.lost, f"lost from Kafka: {in_kafka.lost[:20]}"


async def test_two_replicas_with_one_client_id_take_the_session_from_each_other(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """What docs/replicas.md warns of: the broker hands a client id's session to the newest
    connection, so two replicas given one --mqtt-client-id reconnect in turn for ever (Mosquitto
    2.0 closes the older connection without a DISCONNECT reason; the reconnects are counted)."""
    made = [
        hivemq_beat(tmp_path / name, mosquitto, mqtt_version="5", mqtt_client_id="one-id")
        for name in ("a", "b")
    ]
    async with run_beat(made[0]), run_beat(made[1]):

        def flapping() -> bool:
            return min(float(beat.metrics.reconnects._value.get()) for beat in made) >= 3

        await eventually(flapping, timeout=20, what="both reconnecting again and again")
