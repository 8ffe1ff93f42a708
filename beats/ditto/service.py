"""The Ditto beat assembled from the kernel: ``beats run ditto``."""

from __future__ import annotations

import asyncio

from beats.ditto.settings import DittoSettings
from beats.ditto.source import DittoSource
from common.service import Beat

__all__ = ["DittoSettings", "build", "main"]


def build(settings: DittoSettings) -> Beat:
    return Beat(
        name="ditto",
        settings=settings,
        source=DittoSource(settings),
        channels={"twin", "live"},
        description="Eclipse Ditto twin events and live messages as CloudEvents "
        "(types beats.ditto.twin.<action>, beats.ditto.live.message, ...).",
    )


async def main(settings: DittoSettings, shutdown: asyncio.Event) -> None:
    await build(settings).serve(shutdown)
