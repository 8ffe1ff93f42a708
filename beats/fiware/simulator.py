"""``beats simulate city``: rooms and parking spots changing in a real context broker.

The same scenario as the Orion emulator's built-in one (:mod:`beats.fiware.emulator.scenario`),
sent over Orion's public API: every entity is created (or overwritten) with one batch upsert
``POST /v2/op/update`` (``actionType: append``), then one random entity gets new readings every
``--interval`` seconds. Failed requests are logged and retried at the next tick, so the
simulator outlives a broker restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import Field

from beats.fiware.emulator.scenario import entities, readings
from common.settings import CommandSettings, LogLevel

__all__ = ["CitySettings", "main"]

_log = logging.getLogger(__name__)


class CitySettings(CommandSettings):
    """Change rooms and parking spots in an NGSI v2 context broker (Orion)."""

    orion_url: str = Field("http://127.0.0.1:1026", description="Context broker base URL.")
    fiware_service: str | None = Field(None, description="Fiware-Service (tenant) to write to.")
    interval: float = Field(1.0, gt=0, description="Seconds between entity changes.")
    count: int = Field(0, ge=0, description="Stop after this many changes (0: run forever).")
    seed: int | None = Field(None, description="Random seed for a reproducible scenario.")
    log_level: LogLevel = Field("info", description="Log level.")


def _entity(entity_id: str, kind: str, rng: random.Random) -> dict[str, Any]:
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"id": entity_id, "type": kind, **readings(kind, rng, stamp)}


async def _upsert(client: httpx.AsyncClient, batch: list[dict[str, Any]]) -> bool:
    body = {"actionType": "append", "entities": batch}
    try:
        response = await client.post("/v2/op/update", json=body)
    except httpx.TransportError as exc:
        _log.warning("city: %s unreachable (%s); retrying", client.base_url, exc)
        return False
    if response.status_code >= 300:
        _log.warning("city: update refused: %d %s", response.status_code, response.text[:200])
        return False
    return True


async def main(settings: CitySettings, shutdown: asyncio.Event) -> None:
    rng = random.Random(settings.seed)
    every = entities()
    headers = {"Fiware-Service": settings.fiware_service} if settings.fiware_service else {}
    client = httpx.AsyncClient(base_url=settings.orion_url, headers=headers, timeout=10)
    changes, created = 0, False
    async with client:
        while not shutdown.is_set() and (settings.count == 0 or changes < settings.count):
            if not created:
                created = await _upsert(client, [_entity(i, k, rng) for i, k in every])
            elif await _upsert(client, [_entity(*rng.choice(every), rng)]):
                changes += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shutdown.wait(), settings.interval)
    _log.info("city: %d changes sent", changes)
