"""The Orion emulator as a broker over real HTTP: restart, tenants and service paths, batch
update, Orion's error bodies, pagination, the demo scenario and ``serve``."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from beats.fiware.emulator import Broker, create_app, serve
from tests.fiware.orion import LD_JSON, Receiver, ld_sub, ok, room, subscribe, v2_sub
from tests.support import eventually, free_port, serve_app


async def test_restart_loses_subscriptions_and_queued_notifications(
    orion: tuple[httpx.AsyncClient, Broker], receiver: Receiver
) -> None:
    client, broker = orion
    await subscribe(client, v2_sub(receiver.url))
    await ok(await client.post("/v2/entities", json=room(1, 20)), 201)
    await receiver.wait(1)
    restarted = await ok(await client.post("/admin/restart?lose_subscriptions=true"), 200)
    assert restarted.json() == {"subscriptions": 0}
    assert (await client.get("/v2/subscriptions")).json() == []
    assert (await client.get("/v2/entities/Room1")).status_code == 200  # entities kept
    await ok(
        await client.patch("/v2/entities/Room1/attrs", json={"temperature": {"value": 5}}), 204
    )
    await asyncio.sleep(0.1)
    assert len(receiver.received) == 1  # nothing to notify any more
    await subscribe(client, v2_sub(receiver.url))
    broker.restart(lose_subscriptions=False, lose_entities=True)  # the Python switch
    assert len(broker.subscriptions) == 1
    assert (await client.get("/v2/entities/Room1")).status_code == 404


async def test_tenants_and_service_paths_are_isolated(
    orion: tuple[httpx.AsyncClient, Broker], receiver: Receiver
) -> None:
    client, _ = orion
    north = {"Fiware-Service": "north"}
    sid = await subscribe(
        client, v2_sub(receiver.url + "/n"), **north, **{"Fiware-ServicePath": "/a/#"}
    )
    await subscribe(client, v2_sub(receiver.url + "/c"), **north, **{"Fiware-ServicePath": "/c"})
    await subscribe(client, v2_sub(receiver.url + "/s"), **{"Fiware-Service": "south"})
    in_ab = {**north, "Fiware-ServicePath": "/a/b"}
    await ok(await client.post("/v2/entities", json=room(1, 20), headers=in_ab), 201)
    (note,) = await receiver.wait(1)
    await asyncio.sleep(0.1)
    assert len(receiver.received) == 1 and note.path == "/n"
    assert note.headers["fiware-servicepath"] == "/a/b"
    assert (
        await client.get("/v2/entities/Room1", headers={"Fiware-Service": "south"})
    ).status_code == 404
    listed = await client.get("/v2/entities", headers={**north, "Fiware-ServicePath": "/a/#"})
    assert [e["id"] for e in listed.json()] == ["Room1"]
    assert (
        await client.get("/v2/entities", headers={**north, "Fiware-ServicePath": "/c"})
    ).json() == []
    assert (await client.get(f"/v2/subscriptions/{sid}")).status_code == 404  # other tenant
    scoped = await client.get("/v2/subscriptions", headers={**north, "Fiware-ServicePath": "/c"})
    assert len(scoped.json()) == 1
    bad = await client.get("/v2/entities", headers={"Fiware-Service": "no-dashes!"})
    assert bad.status_code == 400 and bad.json()["error"] == "BadRequest"


async def test_batch_update_with_every_action_type(
    orion: tuple[httpx.AsyncClient, Broker], receiver: Receiver
) -> None:
    client, _ = orion
    await subscribe(client, v2_sub(receiver.url, attrsFormat="keyValues"))

    async def batch(action: str, entities: list[dict[str, Any]]) -> httpx.Response:
        return await client.post(
            "/v2/op/update",
            json={"actionType": action, "entities": entities},
            headers={"Fiware-Correlator": f"root-{action}"},
        )

    await ok(await batch("append", [room(1, 20), room(2, 21)]), 204)
    notes = await receiver.wait(2)
    assert [n.headers["fiware-correlator"] for n in notes] == [
        "root-append; cbnotif=1",
        "root-append; cbnotif=2",
    ]
    strict = await batch("appendStrict", [room(1, 22)])
    assert strict.status_code == 422 and strict.json()["error"] == "Unprocessable"
    partial = await batch("update", [room(1, 23), room(9, 0)])
    assert partial.status_code == 422 and partial.json()["error"] == "PartialUpdate"
    missing = await batch("update", [room(8, 0), room(9, 0)])
    assert missing.status_code == 404 and missing.json()["error"] == "NotFound"
    await ok(
        await batch("replace", [{"id": "Room2", "type": "Room", "pressure": {"value": 9}}]), 204
    )
    await ok(await batch("delete", [{"id": "Room2", "type": "Room"}]), 204)
    assert (await client.get("/v2/entities/Room2")).status_code == 404
    assert (await client.get("/v2/entities/Room1?options=keyValues")).json()["temperature"] == 23
    assert (await batch("explode", [])).status_code == 400


async def test_orion_error_responses(orion: tuple[httpx.AsyncClient, Broker]) -> None:
    client, _ = orion
    json_type = {"Content-Type": "application/json"}
    cases = [
        (await client.post("/v2/entities", content=b"{oops", headers=json_type), 400, "ParseError"),
        (
            await client.post(
                "/v2/entities", content=b"{}", headers={"Content-Type": "text/plain"}
            ),
            415,
            "UnsupportedMediaType",
        ),
        (await client.post("/v2/entities", json={"id": "E<1>", "type": "T"}), 400, "BadRequest"),
        (await client.get("/v2/entities/nope"), 404, "NotFound"),
        (
            await client.post("/v2/subscriptions", json=v2_sub("http://x", attrsFormat="xml")),
            400,
            "BadRequest",
        ),
        (
            await client.post("/v2/subscriptions", json=v2_sub("http://x", covered=True)),
            400,
            "BadRequest",
        ),
        (await client.post("/v2/subscriptions", json={"subject": {}}), 400, "BadRequest"),
    ]
    await ok(await client.post("/v2/entities", json=room(1, 1)), 201)
    cases.append((await client.post("/v2/entities", json=room(1, 1)), 422, "Unprocessable"))
    for response, status, error in cases:
        assert (response.status_code, response.json()["error"]) == (status, error), response.text
        assert "fiware-correlator" in response.headers


async def test_pagination_and_count(orion: tuple[httpx.AsyncClient, Broker]) -> None:
    client, _ = orion
    for n in range(25):
        await ok(await client.post("/v2/entities", json=room(n, n)), 201)
    first = await client.get("/v2/entities?options=count")
    assert len(first.json()) == 20 and first.headers["fiware-total-count"] == "25"
    rest = await client.get("/v2/entities?offset=20&limit=100")
    assert [e["id"] for e in rest.json()] == [f"Room{n}" for n in range(20, 25)]
    assert (await client.get("/v2/entities?limit=0")).status_code == 400


async def test_scenario_changes_rooms_and_parking_spots(receiver: Receiver) -> None:
    app = create_app(scenario=True, scenario_interval=0.02, scenario_seed=1)
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as client:
        listed = (await client.get("/v2/entities?options=keyValues&limit=100")).json()
        assert {e["type"] for e in listed} == {"Room", "ParkingSpot"}
        spots = [e for e in listed if e["type"] == "ParkingSpot"]
        assert all(s["status"] in ("free", "occupied") for s in spots)
        rooms = [e for e in listed if e["type"] == "Room"]
        assert all({"temperature", "pressure"} <= set(r) for r in rooms)
        sub = {
            "subject": {"entities": [{"idPattern": ".*"}]},
            "notification": {"http": {"url": receiver.url + "/v2"}},
        }
        await ok(await client.post("/v2/subscriptions", json=sub), 201)
        ld = ld_sub(receiver.url + "/ld", "concise", "application/json")
        ld["entities"] = [{"idPattern": ".*"}]
        await ok(await client.post("/ngsi-ld/v1/subscriptions", json=ld, headers=LD_JSON), 201)
        await eventually(
            lambda: {n.path for n in receiver.received} == {"/v2", "/ld"}, what="both APIs"
        )


async def test_serve_runs_until_cancelled() -> None:
    port = free_port()
    task = asyncio.create_task(serve(port=port, scenario=False))
    async with httpx.AsyncClient() as client:

        async def up() -> bool:
            try:
                response = await client.get(f"http://127.0.0.1:{port}/version")
            except httpx.TransportError:
                return False
            return bool(response.json()["orion"]["version"])

        await eventually(up, what="the emulator to serve")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(httpx.TransportError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{port}/version")
