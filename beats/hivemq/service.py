"""The HiveMQ beat assembled from the kernel: ``beats run hivemq``."""

from __future__ import annotations

import asyncio

from beats.hivemq.normalize import DEFAULT_CHANNEL
from beats.hivemq.settings import HivemqSettings
from beats.hivemq.source import MqttSource
from common.service import Beat

__all__ = ["HivemqSettings", "build", "main"]


def build(settings: HivemqSettings) -> Beat:
    return Beat(
        name="hivemq",
        settings=settings,
        source=MqttSource(settings),
        channels={DEFAULT_CHANNEL, *(channel for _, channel in settings.channel_map())},
        description="MQTT 3.1.1 / 5 messages as CloudEvents (type beats.hivemq.message).",
    )


async def main(settings: HivemqSettings, shutdown: asyncio.Event) -> None:
    await build(settings).serve(shutdown)
