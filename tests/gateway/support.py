"""Helpers of the gateway tests: kernel beats with chosen names, the gateway under uvicorn."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.envelope import CloudEvent, new_event
from common.service import Beat
from common.settings import BeatSettings
from gateway.service import Gateway, build
from gateway.settings import GatewaySettings
from tests.support import IdleSource, free_port, serving

__all__ = ["beat_named", "gateway_settings", "hivemq_readings", "run_gateway"]


def beat_named(tmp_path: Path, name: str, *, port: int | None = None, **options: Any) -> Beat:
    """A kernel beat called ``name`` with an idle source (tests commit through its pipeline);
    the same ``tmp_path`` and ``name`` give the same log, so a beat can be restarted."""
    settings = BeatSettings(port=port or free_port(), data_dir=tmp_path / f"beat-{name}", **options)
    return Beat(name=name, settings=settings, source=IdleSource())


def gateway_settings(beats: dict[str, Beat | str], **options: Any) -> GatewaySettings:
    specs = []
    for name, beat in beats.items():
        url = beat if isinstance(beat, str) else f"http://127.0.0.1:{beat.settings.port}"
        specs.append(f"{name}={url}")
    options.setdefault("status_interval", 0.2)
    options.setdefault("upstream_linger", 0.2)
    return GatewaySettings(port=free_port(), beat=specs, **options)


@contextlib.asynccontextmanager
async def run_gateway(settings: GatewaySettings) -> AsyncIterator[tuple[Gateway, str]]:
    """Serve a gateway until the block ends; yields it and its base URL."""
    gateway = build(settings)
    async with serving(gateway, settings.port, what="the gateway") as base:
        yield gateway, base


def hivemq_readings(count: int, *, start: int = 0, stations: int = 3) -> list[CloudEvent]:
    """Sensor readings shaped as the HiveMQ beat publishes the simulator's messages."""
    events = []
    for n in range(start, start + count):
        station = f"station-{n % stations:03d}"
        events.append(
            new_event(
                beat="hivemq",
                type="beats.hivemq.message",
                source="mqtt://127.0.0.1:1883",
                channel="messages",
                partitionkey=f"city/sensors/{station}",
                subject=f"city/sensors/{station}",
                data={
                    "sensor_id": station,
                    "temperature": round(25 + (n % 7) * 0.4 - 1.2, 2),
                    "humidity": round(60 + (n % 5) - 2.0, 2),
                    "pressure": 1013 + (n % 3),
                    "air_quality": 200 + (n % 11),
                    "ts": n,
                },
                time=datetime.now(UTC),
                mqttqos=1,
            )
        )
    return events
