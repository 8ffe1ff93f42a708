"""The OpenCTI beat assembled from the kernel: ``beats run opencti``."""

from __future__ import annotations

import asyncio

from beats.opencti.settings import OpenctiSettings
from beats.opencti.source import OpenctiSource
from beats.opencti.stix import DEFAULT_CHANNELS
from common.service import Beat

__all__ = ["OpenctiSettings", "build", "main"]


def build(settings: OpenctiSettings) -> Beat:
    return Beat(
        name="opencti",
        settings=settings,
        source=OpenctiSource(settings),
        channels={*DEFAULT_CHANNELS.values(), "entities", *settings.channel_overrides().values()},
        dead_letter_extensions={"tlp": "red"},  # a rejected frame's content is unvetted
        description="The OpenCTI live stream (STIX 2.1) as CloudEvents "
        "(types beats.opencti.create|update|delete|merge).",
    )


async def main(settings: OpenctiSettings, shutdown: asyncio.Event) -> None:
    await build(settings).serve(shutdown)
