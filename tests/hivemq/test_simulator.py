"""The municipality sensor simulator: the seed's distributions, outliers, and real publishing."""

from __future__ import annotations

import asyncio
import json
import statistics
from itertools import islice

import aiomqtt
import pytest

from beats.hivemq.simulator import DISTRIBUTIONS, SimulatorSettings, main, readings
from tests.brokers import MosquittoBroker

FIELDS = {"sensor_id", "ts", *DISTRIBUTIONS}


def test_readings_follow_the_seed_distributions() -> None:
    sample = list(islice(readings(stations=4, outlier_rate=0.0, seed=7), 4000))
    assert {r.sensor_id for r in sample} == {f"station-00{i}" for i in range(1, 5)}
    for name, (mean, std) in DISTRIBUTIONS.items():
        values = [r.values[name] for r in sample]
        # the trend lets a station drift; recalibration keeps the drift within a fraction of sigma
        assert abs(statistics.fmean(values) - mean) < max(0.5, std * 0.6), name
        assert std * 0.6 < statistics.pstdev(values) < std * 1.6, name


def test_outliers_are_injected_at_the_requested_rate_and_far_from_the_mean() -> None:
    sample = list(islice(readings(stations=2, outlier_rate=0.1, seed=3), 5000))
    flagged = [r for r in sample if r.outliers]
    assert 350 < len(flagged) < 650
    for reading in flagged:
        (name,) = reading.outliers
        mean, std = DISTRIBUTIONS[name]
        assert abs(reading.values[name] - mean) >= 5 * std


def test_same_seed_same_stream() -> None:
    first = [r.values for r in islice(readings(stations=3, outlier_rate=0.05, seed=1), 50)]
    again = [r.values for r in islice(readings(stations=3, outlier_rate=0.05, seed=1), 50)]
    assert first == again


async def test_publishes_json_readings_to_mqtt(mosquitto: MosquittoBroker) -> None:
    settings = SimulatorSettings(mqtt_url=mosquitto.url, stations=3, rate=50, count=12, seed=5)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        await client.subscribe("city/sensors/#", qos=1)
        await main(settings, asyncio.Event())
        received = []
        async with asyncio.timeout(10):
            async for message in client.messages:
                received.append((message.topic.value, message.payload))
                if len(received) == 12:
                    break
    for topic, payload in received:
        assert isinstance(payload, bytes)
        reading = json.loads(payload)
        assert set(reading) == FIELDS
        assert topic == f"city/sensors/{reading['sensor_id']}"


async def test_a_lost_broker_is_retried_not_fatal(
    mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    settings = SimulatorSettings(mqtt_url=mosquitto.url, stations=2, rate=20, count=200, seed=2)
    publishing = asyncio.create_task(main(settings, asyncio.Event()))
    await asyncio.sleep(1.0)
    mosquitto.kill()
    await asyncio.sleep(1.5)
    assert not publishing.done()
    mosquitto.start()
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        await client.subscribe("city/sensors/#", qos=1)
        async with asyncio.timeout(30):
            await publishing  # reaches its count on a new connection instead of raising
            async for message in client.messages:  # readings published after the restart
                assert set(json.loads(message.payload)) == FIELDS
                break
    assert any("reconnecting" in r.message for r in caplog.records)
