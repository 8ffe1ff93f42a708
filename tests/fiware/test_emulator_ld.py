"""The emulator's NGSI-LD side over real HTTP, checked against Orion-LD's code and tests:
formats, both of Orion-LD's notification modes (default and ``-experimental``), GeoJSON
notifications, ``@context`` in the body or a ``Link`` header, tenants, ``receiverInfo``,
``?subscriptionId``, ``showChanges``, concise input, the pause after three failures."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from beats.fiware.emulator import Broker, create_app
from beats.fiware.emulator.ld_bodies import LdMode
from beats.fiware.normalize import Notification, normalize
from tests.fiware.orion import CONTEXT, LD_JSON, LINK_REL, Received, Receiver, ld_sub, ok
from tests.support import eventually, serve_app


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


LD_FORMATS = [
    ("normalized", "application/ld+json", "Normalized", "normalized"),
    ("keyValues", "application/json", "Simplified", "keyValues"),
    ("concise", "application/json", "Concise", "concise"),
]


@pytest.mark.parametrize("mode", ["default", "experimental"])
@pytest.mark.parametrize(("fmt", "accept", "ld_header", "v2_header"), LD_FORMATS)
async def test_ngsi_ld_notifications(
    receiver: Receiver, mode: LdMode, fmt: str, accept: str, ld_header: str, v2_header: str
) -> None:
    app = create_app(ld_mode=mode)
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as client:
        first, second = await _room_notifications(client, receiver, fmt, accept)
    assert second.query == {"subscriptionId": "urn:sub:1"}
    assert second.headers["ngsild-tenant"] == "farm"
    assert second.headers["x-secret"] == "s"
    body = second.json()
    assert body["type"] == "Notification" and body["id"].startswith("urn:ngsi-ld:Notification:")
    if mode == "experimental":  # notificationSend.cpp
        assert second.headers["ngsild-attribute-format"] == ld_header
        assert second.headers["user-agent"].startswith("orionld/")
        assert "ngsiv2-attrsformat" not in second.headers
        json_type = "application/json"
    else:  # the legacy sender: ngsild_notification_with_observedAt.test and others
        assert second.headers["ngsiv2-attrsformat"] == v2_header
        assert second.headers["user-agent"].startswith("orion/")
        assert second.headers["fiware-servicepath"] == "/"
        assert "ngsild-attribute-format" not in second.headers
        json_type = "application/json; charset=utf-8"
    if accept == "application/ld+json":
        assert second.headers["content-type"] == "application/ld+json"
        assert body["@context"] == CONTEXT and "link" not in second.headers
    else:
        assert second.headers["content-type"] == json_type
        assert second.headers["link"] == f'<{CONTEXT}>; {LINK_REL}; type="application/ld+json"'
    (event,) = normalize(Notification(second.body, second.headers), source="t")
    data = event.data
    assert (data["ngsi"], data["format"], data["tenant"]) == ("ld", fmt, "farm")
    assert data["values"]["temperature"] == 21 and data["context"] == CONTEXT
    assert data["geo"]["location"] == {"type": "Point", "coordinates": [1, 2]}
    assert data["notified_at"] == body["notifiedAt"] and event.time is not None
    if fmt != "keyValues":
        assert data["attributes"]["temperature"]["previousValue"] == 20
        assert data["attributes"]["temperature"]["unitCode"] == "CEL"
        assert data["relationships"] == {"owner": "urn:ngsi-ld:Person:1"}
    assert first.json()["data"][0]["id"] == "urn:ngsi-ld:Room:1"


async def _room_notifications(
    client: httpx.AsyncClient, receiver: Receiver, fmt: str, accept: str
) -> list[Received]:
    tenant = {"NGSILD-Tenant": "Farm"}
    sub = ld_sub(receiver.url + "/notify", fmt, accept, showChanges=True)
    response = await client.post(
        "/ngsi-ld/v1/subscriptions", json=sub, headers={**LD_JSON, **tenant}
    )
    assert response.headers["location"] == "/ngsi-ld/v1/subscriptions/urn:sub:1"
    upsert = "/ngsi-ld/v1/entityOperations/upsert"
    await ok(await client.post(upsert, json=[ROOM], headers={**LD_JSON, **tenant}), 201)
    patch = {"temperature": {"type": "Property", "value": 21, "unitCode": "CEL"}}
    attrs = "/ngsi-ld/v1/entities/urn:ngsi-ld:Room:1/attrs"
    await ok(await client.patch(attrs, json=patch, headers={**LD_JSON, **tenant}), 204)
    return await receiver.wait(2)


ROOM = {
    "id": "urn:ngsi-ld:Room:1",
    "type": "Room",
    "temperature": {"type": "Property", "value": 20, "unitCode": "CEL"},
    "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:1"},
    "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, 2]}},
}


@pytest.mark.parametrize("mode", ["default", "experimental"])
@pytest.mark.parametrize("fmt", ["normalized", "keyValues", "concise"])
async def test_geojson_notifications(receiver: Receiver, mode: LdMode, fmt: str) -> None:
    """``ngsild_geojson-format-in-notifications*.test`` (default mode: no ``Link``) and
    ``ngsild_issue-1381-new_notification-in-geojson-format.test`` (experimental)."""
    app = create_app(ld_mode=mode)
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as client:
        _, second = await _room_notifications(client, receiver, fmt, "application/geo+json")
    assert second.headers["content-type"] == "application/geo+json"
    assert ("link" in second.headers) == (mode == "experimental")
    collection = second.json()["data"]
    assert collection["type"] == "FeatureCollection"
    (feature,) = collection["features"]
    assert feature["type"] == "Feature" and feature["id"] == "urn:ngsi-ld:Room:1"
    assert feature["geometry"] == {"type": "Point", "coordinates": [1, 2]}
    assert feature["properties"]["type"] == "Room" and feature["@context"] == CONTEXT
    (event,) = normalize(Notification(second.body, second.headers), source="t")
    data = event.data
    assert (data["ngsi"], data["format"], data["id"], data["type"]) == (
        "ld",
        fmt,
        "urn:ngsi-ld:Room:1",
        "Room",
    )
    assert data["geometry"] == feature["geometry"] and data["entity"] == feature
    assert data["context"] == CONTEXT and data["values"]["temperature"] == 21
    if fmt != "keyValues":
        assert data["relationships"] == {"owner": "urn:ngsi-ld:Person:1"}
        assert data["attributes"]["temperature"]["unitCode"] == "CEL"


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
