"""The OpenCTI beat assembled from the kernel: ``beats run opencti``."""

from __future__ import annotations

import asyncio

from beats.opencti.schema import DEAD_LETTER_EXTENSIONS, DESCRIPTION, EVENTS
from beats.opencti.settings import OpenctiSettings
from beats.opencti.source import OpenctiSource
from beats.opencti.stix import DEFAULT_CHANNELS
from common.service import Beat

__all__ = ["OpenctiSettings", "build", "channels", "main"]


def channels(settings: OpenctiSettings) -> set[str]:
    """Every channel the beat publishes to with these settings (the kernel adds deadletter)."""
    return {*DEFAULT_CHANNELS.values(), "entities", *settings.channel_overrides().values()}


def build(settings: OpenctiSettings) -> Beat:
    return Beat(
        name="opencti",
        settings=settings,
        source=OpenctiSource(settings),
        events=EVENTS,
        channels=channels(settings),
        dead_letter_extensions=DEAD_LETTER_EXTENSIONS,
        description=DESCRIPTION,
    )


async def main(settings: OpenctiSettings, shutdown: asyncio.Event) -> None:
    await build(settings).serve(shutdown)
