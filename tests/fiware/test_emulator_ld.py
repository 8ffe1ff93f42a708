"""The emulator's NGSI-LD side over real HTTP, checked against Orion-LD's code and tests:
formats, ``@context`` in the body or a ``Link`` header, tenants, ``receiverInfo``,
``?subscriptionId``, ``showChanges``, concise input, the pause after three failures."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from beats.fiware.emulator import Broker
from beats.fiware.normalize import Notification, normalize
from tests.fiware.orion import CONTEXT, LD_JSON, LINK_REL, Receiver, ld_sub, ok
from tests.support import eventually


async def test_orion_ld_pauses_after_three_failed_notifications(
    orion: tuple[httpx.AsyncClient, Broker], receiver: Receiver
) -> None:
    client, _ = orion
    sub = ld_sub(receiver.url + "/status/503", "normalized", "application/json")
    await ok(await client.post("/ngsi-ld/v1/subscriptions", json=sub, headers=LD_JSON), 201)
    for n in range(4):
        entity = {
            "id": f"urn:ngsi-ld:Room:{n}",
            "type": "Room",
            "t": {"type": "Property", "value": n},
        }
        await ok(await client.post("/ngsi-ld/v1/entities", json=entity, headers=LD_JSON), 201)
    await receiver.wait(3)
    path = "/ngsi-ld/v1/subscriptions/urn:sub:1"

    async def paused() -> bool:
        shown = (await client.get(path)).json()
        return bool(shown["status"] == "paused" and shown["isActive"] is False)

    await eventually(paused, what="paused")
    shown = (await client.get(path)).json()["notification"]
    assert shown["consecutiveErrors"] == 3 and shown["status"] == "failed"
    assert shown["lastErrorReason"] == "non 2xx response to notification"
    await asyncio.sleep(0.1)
    assert len(receiver.received) == 3
    await ok(await client.patch(path, json={"isActive": True}), 204)
    assert (await client.get(path)).json()["status"] == "active"


@pytest.mark.parametrize(
    ("fmt", "accept", "header"),
    [
        ("normalized", "application/ld+json", "Normalized"),
        ("keyValues", "application/json", "Simplified"),
        ("concise", "application/json", "Concise"),
    ],
)
async def test_ngsi_ld_notifications(
    orion: tuple[httpx.AsyncClient, Broker],
    receiver: Receiver,
    fmt: str,
    accept: str,
    header: str,
) -> None:
    client, _ = orion
    tenant = {"NGSILD-Tenant": "Farm"}
    sub = ld_sub(receiver.url + "/notify", fmt, accept, showChanges=True)
    response = await client.post(
        "/ngsi-ld/v1/subscriptions", json=sub, headers={**LD_JSON, **tenant}
    )
    assert response.headers["location"] == "/ngsi-ld/v1/subscriptions/urn:sub:1"
    entity = {
        "id": "urn:ngsi-ld:Room:1",
        "type": "Room",
        "temperature": {"type": "Property", "value": 20, "unitCode": "CEL"},
        "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:1"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, 2]}},
    }
    upsert = "/ngsi-ld/v1/entityOperations/upsert"
    await ok(await client.post(upsert, json=[entity], headers={**LD_JSON, **tenant}), 201)
    patch = {"temperature": {"type": "Property", "value": 21, "unitCode": "CEL"}}
    attrs = "/ngsi-ld/v1/entities/urn:ngsi-ld:Room:1/attrs"
    await ok(await client.patch(attrs, json=patch, headers={**LD_JSON, **tenant}), 204)
    first, second = await receiver.wait(2)
    assert second.query == {"subscriptionId": "urn:sub:1"}
    assert second.headers["ngsild-attribute-format"] == header
    assert second.headers["ngsild-tenant"] == "farm"
    assert second.headers["x-secret"] == "s"
    body = second.json()
    assert body["type"] == "Notification" and body["id"].startswith("urn:ngsi-ld:Notification:")
    if accept == "application/ld+json":
        assert second.headers["content-type"] == "application/ld+json"
        assert body["@context"] == CONTEXT and "link" not in second.headers
    else:
        assert second.headers["content-type"] == "application/json"
        assert second.headers["link"] == f'<{CONTEXT}>; {LINK_REL}; type="application/ld+json"'
    (event,) = normalize(Notification(second.body, second.headers), source="t")
    data = event.data
    assert (data["ngsi"], data["format"], data["tenant"]) == ("ld", fmt, "farm")
    assert data["values"]["temperature"] == 21 and data["context"] == CONTEXT
    assert data["geo"]["location"] == {"type": "Point", "coordinates": [1, 2]}
    if fmt != "keyValues":
        assert data["attributes"]["temperature"]["previousValue"] == 20
        assert data["attributes"]["temperature"]["unitCode"] == "CEL"
        assert data["relationships"] == {"owner": "urn:ngsi-ld:Person:1"}
    assert first.json()["data"][0]["id"] == "urn:ngsi-ld:Room:1"


async def test_ld_context_from_a_link_header_and_concise_input(
    orion: tuple[httpx.AsyncClient, Broker], receiver: Receiver
) -> None:
    client, _ = orion
    sub = ld_sub(receiver.url, "normalized", "application/json")
    del sub["@context"]
    link = {"Link": f'<{CONTEXT}>; {LINK_REL}; type="application/ld+json"', **LD_JSON}
    await ok(await client.post("/ngsi-ld/v1/subscriptions", json=sub, headers=link), 201)
    concise = {"id": "urn:R:1", "type": "Room", "t": 5, "near": {"object": "urn:R:2"}}
    await ok(await client.post("/ngsi-ld/v1/entities", json=concise, headers=LD_JSON), 201)
    (note,) = await receiver.wait(1)
    assert CONTEXT in note.headers["link"]
    stored = note.json()["data"][0]
    assert stored["t"] == {"type": "Property", "value": 5}
    assert stored["near"] == {"type": "Relationship", "object": "urn:R:2"}
    missing = await client.post(
        "/ngsi-ld/v1/entities", json=concise, headers={"Content-Type": "application/ld+json"}
    )
    assert missing.status_code == 400 and missing.json()["type"].endswith("BadRequestData")
    again = await client.post("/ngsi-ld/v1/entities", json=concise, headers=LD_JSON)
    assert again.status_code == 409 and again.json()["type"].endswith("AlreadyExists")
