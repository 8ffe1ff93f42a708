"""The municipality sensor simulator (seed 004): ``beats simulate sensors``.

Each station publishes JSON readings of ``sensor_id, temperature, humidity, pressure,
air_quality, particulate_matter, noise_level, illuminance, wind_speed, rainfall`` (plus ``ts``)
to ``<topic-prefix>/<sensor_id>``. Each value is drawn from a normal distribution with the seed's
standard deviation around a centre that follows the trend of the station's last 300 readings
and is pulled back towards the seed's mean by the recalibration rate (0.2). With probability
``outlier_rate`` a reading carries one value 5 to 8 standard deviations from the mean.

:func:`readings` is the pure, seeded generator (tests and the Spark examples use it to know
which readings are outliers); :func:`main` publishes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import aiomqtt
from pydantic import Field

from common.settings import CommandSettings, LogLevel
from common.supervise import Backoff

__all__ = ["DISTRIBUTIONS", "Reading", "SimulatorSettings", "main", "readings"]

_log = logging.getLogger(__name__)

DISTRIBUTIONS: dict[str, tuple[float, float]] = {
    "temperature": (25, 2),
    "humidity": (60, 3),
    "pressure": (1013, 2),
    "air_quality": (200, 20),
    "particulate_matter": (30, 2),
    "noise_level": (50, 3),
    "illuminance": (500, 50),
    "wind_speed": (5, 20),
    "rainfall": (0, 3),
}
TREND_WINDOW = 300
RECALIBRATION_RATE = 0.2


class SimulatorSettings(CommandSettings):
    """Publish simulated municipality sensor readings to an MQTT broker."""

    mqtt_url: str = Field("mqtt://127.0.0.1:1883", description="Broker to publish to.")
    mqtt_version: Literal["3.1.1", "5"] = Field("3.1.1", description="MQTT protocol version.")
    topic_prefix: str = Field("city/sensors", description="Readings go to <prefix>/<sensor_id>.")
    stations: int = Field(5, ge=1, description="Number of stations.")
    rate: float = Field(1.0, gt=0, description="Readings per second per station.")
    outlier_rate: float = Field(0.01, ge=0, le=1, description="Probability of an outlier.")
    qos: Literal[0, 1, 2] = Field(1, description="Publish QoS.")
    count: int = Field(0, ge=0, description="Stop after this many readings (0: run forever).")
    seed: int | None = Field(None, description="Random seed for a reproducible stream.")
    log_level: LogLevel = Field("info", description="Log level.")


@dataclass
class Reading:
    sensor_id: str
    values: dict[str, float]
    outliers: list[str]
    ts: datetime

    def payload(self) -> dict[str, Any]:
        return {"sensor_id": self.sensor_id, **self.values, "ts": self.ts.isoformat()}


@dataclass
class _Station:
    sensor_id: str
    history: dict[str, deque[float]] = field(default_factory=dict)

    def centre(self, name: str, mean: float) -> float:
        past = self.history.setdefault(name, deque(maxlen=TREND_WINDOW))
        if not past:
            return mean
        trend = sum(past) / len(past)
        return trend + RECALIBRATION_RATE * (mean - trend)


def readings(*, stations: int, outlier_rate: float, seed: int | None = None) -> Iterator[Reading]:
    """Endless readings, round-robin over the stations."""
    rng = random.Random(seed)
    fleet = [_Station(f"station-{i + 1:03d}") for i in range(stations)]
    while True:
        for station in fleet:
            yield _reading(station, rng, outlier_rate)


def _reading(station: _Station, rng: random.Random, outlier_rate: float) -> Reading:
    values: dict[str, float] = {}
    for name, (mean, std) in DISTRIBUTIONS.items():
        value = rng.gauss(station.centre(name, mean), std)
        station.history[name].append(value)
        values[name] = round(value, 3)
    outliers: list[str] = []
    if rng.random() < outlier_rate:
        name = rng.choice(list(DISTRIBUTIONS))
        mean, std = DISTRIBUTIONS[name]
        values[name] = round(mean + rng.choice((-1, 1)) * rng.uniform(5, 8) * std, 3)
        outliers.append(name)
    return Reading(station.sensor_id, values, outliers, datetime.now(UTC))


async def main(settings: SimulatorSettings, shutdown: asyncio.Event) -> None:
    """Publish until ``shutdown`` (or ``count`` readings). A lost broker connection is logged
    and retried with backoff; the reading in flight then may or may not have arrived."""
    source = readings(
        stations=settings.stations, outlier_rate=settings.outlier_rate, seed=settings.seed
    )
    backoff = Backoff(min_delay=0.5, max_delay=10.0)
    sent = [0]
    while not shutdown.is_set() and (settings.count == 0 or sent[0] < settings.count):
        try:
            await _publish(settings, source, sent, shutdown)
        except aiomqtt.MqttError as exc:
            delay = backoff.next()
            _log.warning("simulator: %s; reconnecting in %.1fs", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shutdown.wait(), delay)
    _log.info("simulator: published %d readings", sent[0])


async def _publish(
    settings: SimulatorSettings, source: Iterator[Reading], sent: list[int], shutdown: asyncio.Event
) -> None:
    """Publish on one connection; ``sent[0]`` counts the readings the broker acknowledged."""
    url = urlsplit(settings.mqtt_url)
    version = aiomqtt.ProtocolVersion.V5 if settings.mqtt_version == "5" else None
    interval = 1.0 / (settings.rate * settings.stations)
    async with aiomqtt.Client(
        url.hostname or "127.0.0.1",
        url.port or 1883,
        username=url.username,
        password=url.password,
        protocol=version,
    ) as client:
        _log.info("simulator: %d stations publishing to %s", settings.stations, settings.mqtt_url)
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not shutdown.is_set() and (settings.count == 0 or sent[0] < settings.count):
            reading = next(source)
            topic = f"{settings.topic_prefix}/{reading.sensor_id}"
            await client.publish(topic, json.dumps(reading.payload()), qos=settings.qos)
            sent[0] += 1
            next_at += interval
            delay = next_at - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(shutdown.wait(), delay)
