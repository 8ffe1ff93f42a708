"""The demo scenario: rooms (temperature, pressure) and parking spots (free / occupied) that
change every ``interval`` seconds, in the default tenant, as NGSI v2 entities (``Room``,
``ParkingSpot`` with ``unitCode`` and ``TimeInstant`` metadata) and as NGSI-LD entities (with
``unitCode`` and ``observedAt``), so subscriptions of either API see them."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from beats.fiware.emulator.broker import Broker
from beats.fiware.emulator.model import Change, Entity, now

__all__ = ["ROOMS", "SPOTS", "entities", "readings", "run_scenario", "step"]

ROOMS = 3
SPOTS = 4
_CORRELATOR = "00000000-0000-4000-8000-00000000demo"


def readings(kind: str, rng: random.Random, stamp: str) -> dict[str, Any]:
    """New NGSI v2 attributes of one ``Room`` or ``ParkingSpot``."""
    at = {"TimeInstant": {"type": "DateTime", "value": stamp}}
    if kind == "Room":
        return {
            "temperature": {
                "type": "Number",
                "value": round(rng.gauss(21, 2), 1),
                "metadata": {**at, "unitCode": {"type": "Text", "value": "CEL"}},
            },
            "pressure": {
                "type": "Number",
                "value": rng.randint(990, 1030),
                "metadata": {**at, "unitCode": {"type": "Text", "value": "A97"}},
            },
        }
    return {"status": {"type": "Text", "value": rng.choice(["free", "occupied"]), "metadata": at}}


def _ld_attrs(v2: dict[str, Any], stamp: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, attr in v2.items():
        unit = attr["metadata"].get("unitCode", {}).get("value")
        out[name] = {
            "type": "Property",
            "value": attr["value"],
            "observedAt": stamp,
            **({"unitCode": unit} if unit else {}),
        }
    return out


def entities() -> list[tuple[str, str]]:
    rooms = [(f"urn:ngsi-ld:Room:{n:03d}", "Room") for n in range(1, ROOMS + 1)]
    spots = [(f"urn:ngsi-ld:ParkingSpot:{n:03d}", "ParkingSpot") for n in range(1, SPOTS + 1)]
    return rooms + spots


def _apply(broker: Broker, entity_id: str, kind: str, attrs: dict[str, Any], *, ld: bool) -> None:
    store = broker.store(None, ld=ld)
    entity = store.get((entity_id, "/"))
    created = entity is None
    if entity is None:
        entity = store[(entity_id, "/")] = Entity(entity_id, kind, "/", ld=ld)
    previous = {n: entity.attrs[n] for n in attrs if n in entity.attrs}
    changed = frozenset(
        n for n, a in attrs.items() if previous.get(n, {}).get("value") != a["value"]
    )
    entity.attrs.update(attrs)
    entity.modified = now()
    alteration = "entityCreate" if created else ("entityChange" if changed else "entityUpdate")
    touched = frozenset(attrs)
    broker.changed(
        [
            Change(
                entity.copy(),
                None,
                alteration,
                touched,
                changed if not ld else touched,
                previous,
                False,
                _CORRELATOR,
            )
        ]
    )


def step(broker: Broker, rng: random.Random, entity_id: str, kind: str) -> None:
    """Give one entity new readings, in both APIs."""
    stamp = now()
    v2 = readings(kind, rng, stamp)
    _apply(broker, entity_id, kind, v2, ld=False)
    _apply(broker, entity_id, kind, _ld_attrs(v2, stamp), ld=True)


async def run_scenario(broker: Broker, *, interval: float, seed: int | None = None) -> None:
    """Create every entity, then change one at random every ``interval`` seconds, forever."""
    rng = random.Random(seed)
    every = entities()
    for entity_id, kind in every:
        step(broker, rng, entity_id, kind)
    while True:
        await asyncio.sleep(interval)
        step(broker, rng, *rng.choice(every))
