"""The Ditto emulator's HTTP API over real HTTP: messages, reads, search, errors, running it."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import pytest

from beats.ditto.emulator import EmulatorSettings, create_app, main, serve
from beats.ditto.emulator.scenario import CARS
from beats.ditto.normalize import normalize
from tests.ditto.conftest import BASIC, Ditto, recv, recv_json, subscribe
from tests.support import eventually, free_port, serve_app

THING = "org.works:coffee"


async def test_live_messages_reach_subscribers(ditto_server: Ditto) -> None:
    await ditto_server.api("PUT", f"/api/2/things/{THING}", json={})
    async with ditto_server.connect() as ws, ditto_server.connect() as other_namespace:
        await subscribe(ws, "START-SEND-MESSAGES")
        await subscribe(other_namespace, "START-SEND-MESSAGES?namespaces=org.elsewhere")
        sent = await ditto_server.api(
            "POST",
            f"/api/2/things/{THING}/inbox/messages/ask/question",
            params={"timeout": "0"},
            content=b"How are you?",
            headers={"content-type": "text/plain", "correlation-id": "q-1"},
        )
        assert sent.status_code == 202
        frame = await recv_json(ws)
        assert frame["topic"] == "org.works/coffee/things/live/messages/ask/question"
        assert (frame["path"], frame["value"]) == ("/inbox/messages/ask/question", "How are you?")
        assert frame["headers"]["correlation-id"] == "q-1"
        assert frame["headers"]["ditto-message-direction"] == "TO"
        assert frame["headers"]["response-required"] is False
        await ditto_server.api(
            "POST",
            f"/api/2/things/{THING}/features/tank/outbox/messages/level",
            params={"timeout": "0"},
            json={"litres": 1.5},
        )
        frame = await recv_json(ws)
        assert (frame["path"], frame["value"]) == (
            "/features/tank/outbox/messages/level",
            {"litres": 1.5},
        )
        (event,) = normalize(frame, source=ditto_server.url)
        assert (event.type, event.data["direction"], event.data["feature_id"]) == (
            "beats.ditto.live.message",
            "outbox",
            "tank",
        )
        await ditto_server.api(
            "POST",
            f"/api/2/things/{THING}/outbox/messages/blob",
            params={"timeout": "0"},
            content=b"\x00\x01",
            headers={"content-type": "application/octet-stream"},
        )
        assert (await recv_json(ws))["value"] == base64.b64encode(b"\x00\x01").decode()
        # the other namespace got none of them: the next frame it sees is its STOP's ACK
        await other_namespace.send("STOP-SEND-MESSAGES")
        assert await recv(other_namespace) == "STOP-SEND-MESSAGES:ACK"


async def test_a_reply_over_the_websocket_answers_the_http_sender(ditto_server: Ditto) -> None:
    await ditto_server.api("PUT", f"/api/2/things/{THING}", json={})
    async with ditto_server.connect() as device:
        await subscribe(device, "START-SEND-MESSAGES")
        request = asyncio.create_task(
            ditto_server.api(
                "POST",
                f"/api/2/things/{THING}/inbox/messages/ask",
                content=b"Hey, how are you?",
                headers={"content-type": "text/plain"},
            )
        )
        question = await recv_json(device)
        assert question["headers"]["response-required"] is True
        reply = {
            "topic": question["topic"],
            "headers": {
                "correlation-id": question["headers"]["correlation-id"],
                "content-type": "text/plain",
            },
            "path": question["path"].replace("inbox", "outbox"),
            "status": 418,
            "value": "I am only a coffee machine",
        }
        await device.send(json.dumps(reply))
        response = await request
    assert (response.status_code, response.text) == (418, "I am only a coffee machine")
    assert response.headers["content-type"].startswith("text/plain")


async def test_message_errors(ditto_server: Ditto) -> None:
    await ditto_server.api("PUT", f"/api/2/things/{THING}", json={})
    path = f"/api/2/things/{THING}/inbox/messages/ask"
    timed_out = await ditto_server.api("POST", path, params={"timeout": "200ms"}, content=b"?")
    assert (timed_out.status_code, timed_out.json()["error"]) == (408, "command.timeout")
    invalid = await ditto_server.api("POST", path, params={"timeout": "soon"}, content=b"?")
    assert (invalid.status_code, invalid.json()["error"]) == (400, "timeout.invalid")
    missing = await ditto_server.api("POST", "/api/2/things/org.works:none/inbox/messages/x")
    assert (missing.status_code, missing.json()["error"]) == (404, "things:thing.notfound")
    nowhere = await ditto_server.api("POST", f"/api/2/things/{THING}/attic/messages/x")
    assert nowhere.status_code == 404


async def test_http_errors_are_dittos(ditto_server: Ditto) -> None:
    async with httpx.AsyncClient(base_url=ditto_server.url) as anonymous:
        refused = await anonymous.get(f"/api/2/things/{THING}", auth=("ditto", "wrong"))
    assert refused.status_code == 401
    assert refused.json()["error"] == "gateway:authentication.failed"
    assert refused.headers["www-authenticate"].startswith("Basic")
    api = ditto_server.api
    assert (await api("GET", f"/api/2/things/{THING}")).json()["error"] == "things:thing.notfound"
    assert (await api("PUT", "/api/2/things/no-namespace", json={})).status_code == 400
    mismatch = await api("PUT", f"/api/2/things/{THING}", json={"thingId": "org.works:other"})
    assert (mismatch.status_code, mismatch.json()["error"]) == (400, "things:id.notsettable")
    assert (await api("PUT", f"/api/2/things/{THING}", content=b"{")).status_code == 400
    await api("PUT", f"/api/2/things/{THING}", json={"attributes": {"a": {"b": 1}}})
    wrong_type = await api("PATCH", f"/api/2/things/{THING}", json={"attributes": {"c": 2}})
    assert wrong_type.status_code == 415
    assert (await api("PUT", f"/api/2/things/{THING}/gadgets", json=1)).status_code == 404
    gone = await api("DELETE", f"/api/2/things/{THING}/attributes/zzz")
    assert (gone.status_code, gone.json()["error"]) == (404, "things:attribute.notfound")


async def test_reads_for_reconciliation(ditto_server: Ditto) -> None:
    api = ditto_server.api
    for n in range(30):
        await api("PUT", f"/api/2/things/org.s:t{n:02}", json={"attributes": {"n": n}})
    await api("PUT", "/api/2/things/org.t:other", json={"attributes": {"n": 99}})
    assert (await api("GET", "/api/2/things/org.s:t07/attributes/n")).json() == 7
    one = await api("GET", "/api/2/things/org.s:t07", params={"fields": "thingId,_revision"})
    assert one.json() == {"thingId": "org.s:t07", "_revision": 1}
    many = await api("GET", "/api/2/things", params={"ids": "org.s:t01,org.x:missing,org.t:other"})
    assert [t["thingId"] for t in many.json()] == ["org.s:t01", "org.t:other"]
    first = (await api("GET", "/api/2/search/things", params={"namespaces": "org.s"})).json()
    assert len(first["items"]) == 25  # Ditto's default page size
    option = f"size(25),cursor({first['cursor']})"
    rest = await api(
        "GET", "/api/2/search/things", params={"namespaces": "org.s", "option": option}
    )
    assert [t["thingId"] for t in rest.json()["items"]] == [f"org.s:t{n}" for n in range(25, 30)]
    assert "cursor" not in rest.json()
    found = await api(
        "GET", "/api/2/search/things", params={"filter": "gt(attributes/n,28)", "fields": "thingId"}
    )
    assert found.json() == {"items": [{"thingId": "org.s:t29"}, {"thingId": "org.t:other"}]}
    bad = await api("GET", "/api/2/search/things", params={"option": "size(500)"})
    assert bad.status_code == 400


async def test_the_car_scenario_drives() -> None:
    app = create_app(scenario=True, scenario_interval=0.01)
    async with serve_app(app) as url:
        ditto = Ditto(url, app.state.ditto)
        await eventually(lambda: all(car in ditto.emulator.things for car in CARS), what="cars")
        async with ditto.connect() as ws:
            await subscribe(ws, "START-SEND-EVENTS?namespaces=org.works.cars")
            frames = [await recv_json(ws) for _ in range(20)]
    events = [e for f in frames for e in normalize(f, source=url)]
    assert {e.type for e in events} == {"beats.ditto.twin.modified"}
    assert {e.subject for e in events} <= set(CARS)
    assert {e.data["feature_id"] for e in events} <= {"speed", "fuel", "location", "engine"}


async def test_serve_and_main_run_until_stopped() -> None:
    port = free_port()
    server = asyncio.create_task(serve(port=port, password="secret"))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        await eventually(lambda: _up(client), what="serve() listening")
        assert (await client.get("/api/2/things/a:b", headers=BASIC)).status_code == 401
    server.cancel()
    with pytest.raises(asyncio.CancelledError):
        await server
    shutdown = asyncio.Event()
    port = free_port()
    running = asyncio.create_task(main(EmulatorSettings(port=port), shutdown))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        await eventually(lambda: _up(client), what="main() listening")
    shutdown.set()
    await asyncio.wait_for(running, 10)


async def _up(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/healthz")).status_code == 200
    except httpx.TransportError:
        return False
