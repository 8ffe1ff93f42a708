"""The Ditto emulator over a real WebSocket (``websockets`` client): subscriptions and events."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from beats.ditto.emulator.sessions import Session, Subscription
from beats.ditto.normalize import normalize
from beats.ditto.protocol import control, jwt_token
from tests.ditto.conftest import TOKEN, Ditto, recv, recv_json, subscribe
from tests.support import eventually

STREAMS = ["EVENTS", "MESSAGES", "LIVE-COMMANDS", "LIVE-EVENTS", "POLICY-ANNOUNCEMENTS"]


async def test_every_command_gets_its_exact_ack(ditto_server: Ditto) -> None:
    async with ditto_server.connect() as ws:
        for stream in STREAMS:
            await subscribe(ws, f"START-SEND-{stream}")
        (session,) = ditto_server.emulator.sessions
        assert sorted(session.subscriptions) == [
            "live-commands",
            "live-events",
            "messages",
            "policy-announcements",
            "twin-events",
        ]
        await ws.send(jwt_token("jwt-2"))  # no reply: the next frame is the STOP's ACK
        for stream in STREAMS:
            await ws.send(f"STOP-SEND-{stream}")
            assert await recv(ws) == f"STOP-SEND-{stream}:ACK"
        assert session.subscriptions == {}
        assert session.jwt_tokens == ["jwt-2"]


async def test_every_change_becomes_its_twin_event(ditto_server: Ditto) -> None:
    thing, api = "org.works:car-1", ditto_server.api
    async with ditto_server.connect() as ws:
        await subscribe(ws, "START-SEND-EVENTS")

        async def expect(action: str, path: str, **fields: Any) -> dict[str, Any]:
            frame = await recv_json(ws)
            assert frame["topic"] == f"org.works/car-1/things/twin/events/{action}"
            assert frame["path"] == path
            for key, value in fields.items():
                assert frame.get(key, "<absent>") == value, key
            (event,) = normalize(frame, source=ditto_server.url)  # the beat can read it
            assert event.subject == thing
            return frame

        created = await api(
            "PUT",
            f"/api/2/things/{thing}",
            json={"attributes": {"n": 1}},
            headers={"correlation-id": "put-1"},
        )
        assert created.status_code == 201
        assert created.headers["location"] == f"/api/2/things/{thing}"
        frame = await expect("created", "/", revision=1)
        assert frame["value"] == {"thingId": thing, "policyId": thing, "attributes": {"n": 1}}
        assert frame["headers"]["correlation-id"] == "put-1"
        assert frame["headers"]["ditto-originator"] == "nginx:ditto"
        assert frame["timestamp"].endswith("Z")
        assert (await api("PUT", f"/api/2/things/{thing}", json={})).status_code == 204
        await expect("modified", "/", revision=2)
        await api("PUT", f"/api/2/things/{thing}/attributes/color", json="red")
        await expect("created", "/attributes/color", value="red", revision=3)
        await api("PUT", f"/api/2/things/{thing}/features/engine/properties/temp", json=90.5)
        await expect("created", "/features/engine/properties/temp", value=90.5, revision=4)
        await api("PUT", f"/api/2/things/{thing}/features/engine/properties/temp", json=91)
        await expect("modified", "/features/engine/properties/temp", value=91, revision=5)
        merge = {"content-type": "application/merge-patch+json"}
        patch = {"attributes": {"trim": "GT", "color": None}}
        await api("PATCH", f"/api/2/things/{thing}", json=patch, headers=merge)
        frame = await expect("merged", "/", value=patch, revision=6)
        assert frame["headers"]["content-type"] == "application/merge-patch+json"
        await api("PATCH", f"/api/2/things/{thing}/features/engine", content="null", headers=merge)
        await expect("merged", "/features/engine", value=None, revision=7)
        state = (await api("GET", f"/api/2/things/{thing}")).json()
        assert state == {
            "thingId": thing,
            "policyId": thing,
            "attributes": {"trim": "GT"},
            "features": {},  # merge patch: null removes the key, the parent object stays
        }
        await api("DELETE", f"/api/2/things/{thing}/attributes/trim")
        await expect("deleted", "/attributes/trim", value="<absent>", revision=8)
        await api("DELETE", f"/api/2/things/{thing}")
        await expect("deleted", "/", value="<absent>", revision=9)
        await api("PUT", f"/api/2/things/{thing}", json={})
        await expect("created", "/", revision=10)  # revisions go on after a deletion


async def test_namespaces_filter_and_extra_fields(ditto_server: Ditto) -> None:
    async def put(thing: str, attributes: dict[str, Any]) -> None:
        await ditto_server.api("PUT", f"/api/2/things/{thing}", json={"attributes": attributes})

    async with ditto_server.connect() as fast, ditto_server.connect() as deletions:
        command = control(
            "START-SEND-EVENTS",
            namespaces=["org.a"],
            filter="gt(attributes/speed,100)",
            extra_fields="attributes/model",
        )
        await subscribe(fast, command)
        await subscribe(
            deletions, control("START-SEND-EVENTS", filter="eq(topic:action,'deleted')")
        )
        await put("org.a:fast", {"speed": 150, "model": "EV"})
        await put("org.a:slow", {"speed": 20, "model": "EV"})
        await put("org.b:fast", {"speed": 180, "model": "EV"})
        # Ditto filters the changed data (plus extraFields), not the stored thing:
        await ditto_server.api("PUT", "/api/2/things/org.a:fast/attributes/model", json="GT")
        await ditto_server.api("DELETE", "/api/2/things/org.b:fast")
        await put("org.a:marker", {"speed": 999})
        frames = [await recv_json(fast), await recv_json(fast)]
        assert [f["topic"] for f in frames] == [
            "org.a/fast/things/twin/events/created",
            "org.a/marker/things/twin/events/created",
        ]
        assert [f["extra"] for f in frames] == [{"attributes": {"model": "EV"}}, {}]
        deleted = await recv_json(deletions)
        assert deleted["topic"] == "org.b/fast/things/twin/events/deleted"
        assert "extra" not in deleted


async def test_an_invalid_filter_gets_dittos_error_instead_of_an_ack(ditto_server: Ditto) -> None:
    async with ditto_server.connect() as ws:
        await ws.send("START-SEND-EVENTS?filter=" + "eq(attributes%2Fx")
        frame = await recv_json(ws)
        assert frame["topic"] == "unknown/unknown/things/twin/errors"
        assert (frame["status"], frame["value"]["error"]) == (400, "rql.expression.invalid")
        (event,) = normalize(frame, source=ditto_server.url)
        assert event.type == "beats.ditto.error"
        assert ditto_server.emulator.hub.sessions.pop().subscriptions == {}


async def test_bad_credentials_are_refused_at_the_handshake(ditto_server: Ditto) -> None:
    for headers in ({"Authorization": "Basic eDp5"}, {"Authorization": "Bearer nope"}, {"X": "y"}):
        with pytest.raises(InvalidStatus) as refused:
            async with ditto_server.connect(headers):
                pass
        assert refused.value.response.status_code == 401
    async with ditto_server.connect({"Authorization": f"Bearer {TOKEN}"}) as ws:
        await subscribe(ws, "START-SEND-EVENTS")
    # the access_token query parameter, for clients that cannot set headers
    async with websockets.connect(ditto_server.ws_url + f"?access_token={TOKEN}") as ws:
        await subscribe(ws, "START-SEND-MESSAGES")


async def test_drop_switch_closes_every_session(ditto_server: Ditto) -> None:
    async with ditto_server.connect() as one, ditto_server.connect() as two:
        await subscribe(one, "START-SEND-EVENTS")
        await subscribe(two, "START-SEND-MESSAGES")
        response = await ditto_server.api("POST", "/admin/drop")
        assert response.json() == {"dropped": 2}
        for ws in (one, two):
            with pytest.raises(ConnectionClosed):
                await recv(ws)
            assert ws.close_code == 1011
    await eventually(lambda: not ditto_server.emulator.sessions, what="sessions forgotten")
    async with ditto_server.connect() as three:
        await subscribe(three, "START-SEND-EVENTS")
        assert await ditto_server.emulator.hub.drop_connections() == 1  # the Python switch
        with pytest.raises(ConnectionClosed):
            await recv(three)


async def test_a_fast_reader_gets_a_10k_burst_completely(ditto_server: Ditto) -> None:
    async with ditto_server.connect(max_size=None) as ws:
        await subscribe(ws, "START-SEND-EVENTS")
        burst = asyncio.create_task(
            ditto_server.api("POST", "/admin/burst", params={"thing_id": "org.b:t", "count": 10000})
        )
        revisions = [(await recv_json(ws))["revision"] for _ in range(10001)]
        assert (await burst).json() == {"events": 10000, "dropped": 0}
    assert revisions == list(range(1, 10002))  # created, then 10k modified, in order


class StalledSocket:
    """A client that never reads: its send never completes."""

    async def send_text(self, data: str) -> None:
        await asyncio.Event().wait()

    async def send_bytes(self, data: bytes) -> None:
        await asyncio.Event().wait()

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        return None


async def test_a_stalled_reader_loses_events_without_slowing_others(ditto_server: Ditto) -> None:
    hub = ditto_server.emulator.hub
    stalled = Session(StalledSocket(), buffer=10, subject="nginx:slow")
    stalled.subscriptions["twin-events"] = Subscription((), None, ())
    sender = asyncio.create_task(stalled.send_loop())
    hub.sessions.add(stalled)
    try:
        async with ditto_server.connect() as ws:
            await subscribe(ws, "START-SEND-EVENTS")
            params = {"thing_id": "org.b:t", "count": 1000}
            response = await ditto_server.api("POST", "/admin/burst", params=params)
            frames = [await recv_json(ws) for _ in range(1001)]
    finally:
        sender.cancel()
        hub.sessions.discard(stalled)
    assert frames[-1]["revision"] == 1001
    assert stalled.queue.qsize() == 10
    assert stalled.dropped == 1001 - 10 - 1  # one frame is stuck in the socket's send
    assert response.json()["dropped"] == stalled.dropped


async def test_client_frames(ditto_server: Ditto) -> None:
    await ditto_server.api("PUT", "/api/2/things/org.c:lamp", json={})
    async with ditto_server.connect() as device, ditto_server.connect() as app:
        await subscribe(device, "START-SEND-MESSAGES")
        await subscribe(app, "START-SEND-MESSAGES")
        await app.send("{not json")
        frame = await recv_json(app)
        assert (frame["status"], frame["value"]["error"]) == (400, "json.invalid")
        command = {
            "topic": "org.c/lamp/things/twin/commands/modify",
            "path": "/attributes/x",
            "headers": {"correlation-id": "cmd-1"},
            "value": 1,
        }
        await app.send(json.dumps(command))
        frame = await recv_json(app)
        assert frame["topic"] == "org.c/lamp/things/twin/errors"
        assert (frame["status"], frame["headers"]["correlation-id"]) == (501, "cmd-1")
        message = {
            "topic": "org.c/lamp/things/live/messages/switch",
            "value": "on",
            "path": "/inbox/messages/switch",
            "headers": {"correlation-id": "m-1", "content-type": "text/plain"},
        }
        await app.send(json.dumps(message))
        assert await recv_json(device) == message  # routed to the others, not echoed
        await app.send("STOP-SEND-MESSAGES")
        assert await recv(app) == "STOP-SEND-MESSAGES:ACK"


async def test_live_events_and_commands_from_a_device_are_routed(ditto_server: Ditto) -> None:
    async with ditto_server.connect() as device, ditto_server.connect() as app:
        await subscribe(
            app, "START-SEND-LIVE-EVENTS?filter=" + "gt(features%2Fdoor%2Fproperties%2Fangle,10)"
        )
        await subscribe(app, "START-SEND-LIVE-COMMANDS")
        event = {
            "topic": "org.c/car/things/live/events/modified",
            "headers": {"correlation-id": "le-1"},
            "path": "/features/door/properties/angle",
        }
        await device.send(json.dumps({**event, "value": 5}))  # filtered out
        await device.send(json.dumps({**event, "value": 45}))
        command = {**event, "topic": "org.c/car/things/live/commands/modify", "value": 0}
        await device.send(json.dumps(command))
        assert await recv_json(app) == {**event, "value": 45}
        assert await recv_json(app) == command
        (live,) = normalize(command, source=ditto_server.url)
        assert live.type == "beats.ditto.live.command"
