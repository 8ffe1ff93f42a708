"""The Ditto beat assembled from the kernel: ``beats run ditto``."""

from __future__ import annotations

import asyncio

from beats.ditto.schema import DESCRIPTION, EVENTS
from beats.ditto.settings import DittoSettings
from beats.ditto.source import DittoSource
from common.service import Beat

__all__ = ["DittoSettings", "build", "channels", "main"]


def channels(_settings: DittoSettings) -> set[str]:
    """Every channel the beat publishes to with these settings (the kernel adds deadletter)."""
    return {"twin", "live"}


def build(settings: DittoSettings) -> Beat:
    return Beat(
        name="ditto",
        settings=settings,
        source=DittoSource(settings),
        events=EVENTS,
        channels=channels(settings),
        description=DESCRIPTION,
    )


async def main(settings: DittoSettings, shutdown: asyncio.Event) -> None:
    await build(settings).serve(shutdown)
