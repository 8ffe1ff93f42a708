"""The FIWARE beat assembled from the kernel: ``beats run fiware``."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx

from beats.fiware.routes import fiware_router
from beats.fiware.schema import DESCRIPTION, EVENTS
from beats.fiware.settings import FiwareSettings
from beats.fiware.subscriptions import SubscriptionKeeper
from common.service import Beat

__all__ = ["FiwareSettings", "build", "channels", "main"]

_log = logging.getLogger(__name__)


def channels(_settings: FiwareSettings) -> set[str]:
    """Every channel the beat publishes to with these settings (the kernel adds deadletter)."""
    return {"entities", "raw"}


def build(settings: FiwareSettings) -> Beat:
    keeper = SubscriptionKeeper(settings)
    beat = Beat(
        name="fiware",
        settings=settings,
        source=keeper,
        events=EVENTS,
        channels=channels(settings),
        description=DESCRIPTION,
        max_body_bytes=settings.max_body_bytes,
    )
    beat.app.include_router(fiware_router(settings, beat.pipeline, keeper))
    return beat


async def main(settings: FiwareSettings, shutdown: asyncio.Event) -> None:
    beat = build(settings)
    await beat.serve(shutdown)
    if settings.remove_subscriptions and isinstance(beat.source, SubscriptionKeeper):
        with contextlib.suppress(httpx.HTTPError):
            if await beat.source.remove():
                _log.info("fiware: removed this beat's subscriptions")
