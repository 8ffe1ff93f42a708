"""The HiveMQ beat assembled from the kernel: ``beats run hivemq``."""

from __future__ import annotations

import asyncio

from beats.hivemq.normalize import DEFAULT_CHANNEL
from beats.hivemq.schema import DESCRIPTION, EVENTS
from beats.hivemq.settings import HivemqSettings
from beats.hivemq.source import MqttSource
from common.service import Beat

__all__ = ["HivemqSettings", "build", "channels", "main"]


def channels(settings: HivemqSettings) -> set[str]:
    """Every channel the beat publishes to with these settings (the kernel adds deadletter)."""
    return {DEFAULT_CHANNEL, *(channel for _, channel in settings.channel_map())}


def build(settings: HivemqSettings) -> Beat:
    return Beat(
        name="hivemq",
        settings=settings,
        source=MqttSource(settings),
        events=EVENTS,
        channels=channels(settings),
        description=DESCRIPTION,
    )


async def main(settings: HivemqSettings, shutdown: asyncio.Event) -> None:
    await build(settings).serve(shutdown)
