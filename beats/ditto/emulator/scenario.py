"""Connected cars for the demo: twins whose speed, fuel, location and engine temperature change.

Every ``interval`` one property of one car changes (a twin ``modified`` event at
``/features/<feature>/properties/<property>``); an overheating engine also sends an outbox live
message ``alerts/engine-temperature`` (fire-and-forget). Deterministic for a given seed.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from beats.ditto.emulator.core import DittoEmulator, Outgoing

__all__ = ["CARS", "drive", "install"]

NAMESPACE = "org.works.cars"
CARS = tuple(f"{NAMESPACE}:car-{n}" for n in range(1, 4))
OVERHEATED = 104.0


def _car(n: int) -> dict[str, Any]:
    return {
        "attributes": {"model": "EV-" + "ABC"[n % 3], "year": 2021 + n, "vin": f"WBA00000{n}"},
        "features": {
            "speed": {"properties": {"value": 0.0, "unit": "km/h"}},
            "fuel": {"properties": {"value": 100.0, "unit": "%"}},
            "location": {"properties": {"latitude": 48.137, "longitude": 11.575}},
            "engine": {"properties": {"temperature": 20.0, "unit": "°C"}},
        },
    }


def install(emulator: DittoEmulator) -> None:
    """Create the cars (one ``created`` event each) unless they exist."""
    for n, thing_id in enumerate(CARS):
        if thing_id not in emulator.things:
            emulator.apply(emulator.store.put(thing_id, "/", _car(n)))


def _step(emulator: DittoEmulator, rng: random.Random) -> None:
    thing_id = rng.choice(CARS)
    properties = emulator.things[thing_id]["features"]
    feature = rng.choice(("speed", "fuel", "location", "engine"))
    if feature == "speed":
        changes: dict[str, Any] = {"value": round(rng.uniform(0, 130), 1)}
    elif feature == "fuel":
        level = properties["fuel"]["properties"].get("value", 100.0)
        changes = {"value": round(max(0.0, level - rng.uniform(0, 2)) or 100.0, 1)}
    elif feature == "location":
        changes = {
            "latitude": round(48.137 + rng.uniform(-0.05, 0.05), 5),
            "longitude": round(11.575 + rng.uniform(-0.05, 0.05), 5),
        }
    else:
        changes = {"temperature": round(rng.gauss(92, 6), 1)}
    for prop, value in changes.items():
        path = f"/features/{feature}/properties/{prop}"
        emulator.apply(emulator.store.put(thing_id, path, value))
    if changes.get("temperature", 0) > OVERHEATED:
        alert = {"temperature": changes["temperature"], "limit": OVERHEATED}
        outgoing = Outgoing(
            thing_id, "outbox", "alerts/engine-temperature", alert, "application/json", "engine"
        )
        emulator.message(outgoing, response_required=False)


async def drive(emulator: DittoEmulator, *, interval: float, seed: int = 7) -> None:
    """Run the scenario until cancelled."""
    rng = random.Random(seed)
    install(emulator)
    while True:
        await asyncio.sleep(interval)
        if all(car in emulator.things for car in CARS):
            _step(emulator, rng)
        else:
            install(emulator)  # somebody deleted a car: bring it back
