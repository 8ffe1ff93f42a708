"""The Ditto emulator and the Ditto beat over a real WebSocket and real HTTP."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from beats.ditto.emulator import create_app
from beats.ditto.service import build
from beats.ditto.settings import DittoSettings
from common.service import Beat
from tests.support import eventually, free_port, read_sse, run_beat, serve_app

AUTH = ("ditto", "ditto")


@pytest.fixture
async def ditto() -> AsyncIterator[tuple[str, Any]]:
    app = create_app(token="jwt-1")
    async with serve_app(app) as url:
        yield url, app.state.ditto


def ditto_beat(tmp_path: Path, url: str, **options: Any) -> Beat:
    options.setdefault("ditto_username", AUTH[0])
    options.setdefault("ditto_password", AUTH[1])
    settings = DittoSettings(
        port=free_port(), data_dir=tmp_path / "ditto", ditto_url=url, **options
    )
    return build(settings)


async def api(url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, auth=AUTH) as client:
        response = await client.request(method, path, **kwargs)
        response.raise_for_status()
        return response


async def subscribed(beat: Beat) -> None:
    await eventually(lambda: beat.readiness.ready, what="ACK-confirmed subscription")


async def test_emulator_acks_and_refuses_bad_credentials(ditto: tuple[str, Any]) -> None:
    url, _ = ditto
    ws_url = url.replace("http", "ws") + "/ws/2"
    basic = base64.b64encode(b"ditto:ditto").decode()
    async with websockets.connect(
        ws_url, additional_headers={"Authorization": f"Basic {basic}"}
    ) as ws:
        await ws.send("START-SEND-EVENTS?namespaces=org.a&filter=eq(attributes%2Fx%2C1)")
        assert await ws.recv() == "START-SEND-EVENTS:ACK"
        await ws.send("STOP-SEND-EVENTS")
        assert await ws.recv() == "STOP-SEND-EVENTS:ACK"
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(ws_url, additional_headers={"Authorization": "Basic eDp5"}):
            pass
    assert refused.value.response.status_code == 401


async def test_every_action_and_live_messages_reach_sse(
    tmp_path: Path, ditto: tuple[str, Any]
) -> None:
    url, _ = ditto
    beat = ditto_beat(tmp_path, url)
    thing = "org.works:car-1"
    async with run_beat(beat) as base:
        await subscribed(beat)
        await api(url, "PUT", f"/api/2/things/{thing}", json={"attributes": {"color": "blue"}})
        await api(url, "PUT", f"/api/2/things/{thing}", json={"attributes": {"color": "red"}})
        await api(url, "PUT", f"/api/2/things/{thing}/features/engine/properties/temp", json=91.5)
        await api(
            url,
            "PATCH",
            f"/api/2/things/{thing}",
            json={"attributes": {"trim": "GT"}},
            headers={"content-type": "application/merge-patch+json"},
        )
        await api(
            url,
            "POST",
            f"/api/2/things/{thing}/inbox/messages/ask/question",
            params={"timeout": "0"},
            content=b"How fast?",
            headers={"content-type": "text/plain"},
        )
        await api(url, "DELETE", f"/api/2/things/{thing}")
        messages = await read_sse(f"{base}/events?last_event_id=0", count=6)
    types = [m.event for m in messages]
    assert types == [
        "beats.ditto.twin.created",
        "beats.ditto.twin.modified",
        "beats.ditto.twin.created",  # a new feature property: FeaturePropertyCreated
        "beats.ditto.twin.merged",
        "beats.ditto.live.message",
        "beats.ditto.twin.deleted",
    ]
    events = [m.json() for m in messages]
    assert events[2]["data"]["feature_id"] == "engine"
    assert events[2]["data"]["value"] == 91.5
    assert events[4]["data"]["subject"] == "ask/question"
    assert events[4]["data"]["direction"] == "inbox"
    assert [e["data"].get("revision") for e in events if "twin" in e["type"]] == [1, 2, 3, 4, 5]
    assert all(e["subject"] == thing for e in events)


async def test_namespaces_and_filter_are_applied(tmp_path: Path, ditto: tuple[str, Any]) -> None:
    url, _ = ditto
    beat = ditto_beat(
        tmp_path,
        url,
        namespaces=["org.a"],
        filter="gt(attributes/speed,100)",
        extra_fields="attributes/model",
    )
    async with run_beat(beat) as base:
        await subscribed(beat)
        for thing, speed in (("org.a:fast", 150), ("org.a:slow", 20), ("org.b:fast", 180)):
            await api(
                url,
                "PUT",
                f"/api/2/things/{thing}",
                json={"attributes": {"speed": speed, "model": "EV"}},
            )
        (message,) = await read_sse(f"{base}/events/twin?last_event_id=0", count=1)
        await asyncio.sleep(0.3)
        assert beat.log.head == 1
    assert message.json()["subject"] == "org.a:fast"
    assert message.json()["data"]["extra"] == {"attributes": {"model": "EV"}}


async def test_dropped_connection_resubscribes_and_emits_snapshots(
    tmp_path: Path, ditto: tuple[str, Any]
) -> None:
    url, emulator = ditto
    beat = ditto_beat(tmp_path, url)
    async with run_beat(beat) as base:
        await subscribed(beat)
        for n in range(3):
            await api(url, "PUT", f"/api/2/things/org.works:car-{n}", json={"attributes": {"n": n}})
        await eventually(lambda: beat.log.head == 3, what="three created")
        await api(url, "POST", "/admin/drop")
        await eventually(lambda: beat.metrics.reconnects._value.get() >= 1, what="reconnect")
        await eventually(lambda: beat.log.head == 6, what="three snapshots")
        await api(url, "PUT", "/api/2/things/org.works:car-0", json={"attributes": {"n": 9}})
        messages = await read_sse(f"{base}/events?last_event_id=0", count=7)
        (session,) = emulator.sessions  # the new session subscribed again, in order
        assert session.commands[:2] == ["START-SEND-EVENTS", "START-SEND-MESSAGES"]
    types = [m.event for m in messages]
    assert types[:3] == ["beats.ditto.twin.created"] * 3
    assert sorted(types[3:6]) == ["beats.ditto.twin.snapshot"] * 3
    assert types[6] == "beats.ditto.twin.modified"
    snapshots = {m.json()["subject"]: m.json()["data"]["revision"] for m in messages[3:6]}
    assert snapshots == {f"org.works:car-{n}": 1 for n in range(3)}
    assert len({m.json()["id"] for m in messages}) == 7


async def test_bad_credentials_are_reported(tmp_path: Path, ditto: tuple[str, Any]) -> None:
    url, _ = ditto
    beat = ditto_beat(tmp_path, url, ditto_password="wrong")
    async with run_beat(beat) as base, httpx.AsyncClient() as client:
        await eventually(lambda: beat.metrics.reconnects._value.get() >= 1, what="refusal")
        response = await client.get(f"{base}/readyz")
    assert response.status_code == 503
    assert "HTTP 401" in response.json()["checks"]["ditto"]["detail"]
    assert "wrong" not in response.text


async def test_malformed_frames_are_dead_lettered(tmp_path: Path, ditto: tuple[str, Any]) -> None:
    url, _ = ditto
    beat = ditto_beat(tmp_path, url)
    async with run_beat(beat) as base:
        await subscribed(beat)
        await api(url, "POST", "/admin/raw", content=b"{broken")
        await api(url, "POST", "/admin/raw", content=b'{"topic": "x", "path": "/"}')
        await api(url, "PUT", "/api/2/things/org.works:ok", json={})
        messages = await read_sse(f"{base}/events?last_event_id=0", count=3)
        assert beat.readiness.ready  # the session survived the garbage
    assert [m.event for m in messages] == [
        "beats.ditto.deadletter",
        "beats.ditto.deadletter",
        "beats.ditto.twin.created",
    ]
    assert "not JSON" in messages[0].json()["data"]["reason"]


async def test_a_burst_of_10k_events_is_consumed_completely(
    tmp_path: Path, ditto: tuple[str, Any]
) -> None:
    url, emulator = ditto
    beat = ditto_beat(tmp_path, url)
    async with run_beat(beat):
        await subscribed(beat)
        response = await api(
            url,
            "POST",
            "/admin/burst",
            params={"thing_id": "org.works:b", "count": 10000},
            timeout=60,  # it answers once all 10k were sent: slow on a busy machine
        )
        await eventually(lambda: beat.log.head == 10001, timeout=60, what="10k committed")
    assert response.json()["dropped"] == 0
    assert emulator.dropped == 0
    assert beat.metrics.committed.labels("twin")._value.get() == 10001  # created + 10k modified


async def test_bearer_token_refreshed_in_band(tmp_path: Path, ditto: tuple[str, Any]) -> None:
    url, emulator = ditto
    token_file = tmp_path / "token"
    token_file.write_text("jwt-1")
    beat = ditto_beat(
        tmp_path, url, ditto_username=None, ditto_password=None, ditto_token_file=token_file
    )
    async with run_beat(beat):
        await subscribed(beat)
        token_file.write_text("jwt-2")
        await eventually(
            lambda: any(s.jwt_tokens == ["jwt-2"] for s in emulator.sessions),
            timeout=15,
            what="JWT-TOKEN on the open session",
        )


async def test_reconciliation_follows_the_search_cursor(
    tmp_path: Path, ditto: tuple[str, Any]
) -> None:
    """230 things in a namespace: more than one search page (200) must be read."""
    url, _ = ditto
    for n in range(230):
        await api(url, "PUT", f"/api/2/things/org.big:thing-{n}", json={"attributes": {"n": n}})
    beat = ditto_beat(tmp_path, url, namespaces=["org.big"])
    async with run_beat(beat):
        await subscribed(beat)
        await eventually(lambda: beat.log.head == 230, timeout=20, what="230 snapshots")
    assert beat.metrics.committed.labels("twin")._value.get() == 230
