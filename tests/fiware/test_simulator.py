"""``beats simulate city`` against the Orion emulator over real HTTP: entities created, then
changed; a broker that is down is retried, not fatal."""

from __future__ import annotations

import asyncio

import httpx

from beats.fiware.emulator import create_app
from beats.fiware.emulator.scenario import ROOMS, SPOTS
from beats.fiware.simulator import CitySettings, main
from tests.support import eventually, free_port, serve_app


async def test_city_creates_and_changes_entities_in_orion() -> None:
    app = create_app()
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as orion:
        settings = CitySettings(orion_url=url, interval=0.02, count=20, seed=1)
        await asyncio.wait_for(main(settings, asyncio.Event()), 20)
        rooms = (await orion.get("/v2/entities", params={"type": "Room"})).json()
        spots = (await orion.get("/v2/entities", params={"type": "ParkingSpot"})).json()
    assert len(rooms) == ROOMS and len(spots) == SPOTS
    assert all(r["temperature"]["metadata"]["unitCode"]["value"] == "CEL" for r in rooms)
    assert {s["status"]["value"] for s in spots} <= {"free", "occupied"}


async def test_city_retries_until_the_broker_is_up() -> None:
    port, shutdown = free_port(), asyncio.Event()
    settings = CitySettings(orion_url=f"http://127.0.0.1:{port}", interval=0.05, seed=2)
    city = asyncio.create_task(main(settings, shutdown))
    await asyncio.sleep(0.3)  # a few refused connections
    assert not city.done()
    app = create_app()
    async with serve_app(app, port=port), httpx.AsyncClient(base_url=settings.orion_url) as orion:

        async def created() -> bool:
            return len((await orion.get("/v2/entities")).json()) == ROOMS + SPOTS

        await eventually(created, what="the entities once Orion is up")
        shutdown.set()
        await asyncio.wait_for(city, 5)
