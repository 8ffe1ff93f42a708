"""The Orion emulator and the FIWARE beat over real HTTP: subscriptions that heal themselves,
every notification format, tenants, the secret header, concurrency, bad input, write-back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from beats.fiware.emulator import Broker, create_app
from beats.fiware.service import build
from beats.fiware.settings import FiwareSettings
from beats.fiware.subscriptions import SECRET_HEADER, SubscriptionKeeper
from common.service import Beat
from tests.support import eventually, free_port, read_sse, run_beat, serve_app

SECRET = "s3cret-for-tests"


@pytest.fixture
async def orion(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, Broker]]:
    """The Orion emulator; Orion-LD's notification mode by indirect parametrisation
    (``default`` when not parametrised: Orion-LD as it ships)."""
    app = create_app(ld_mode=getattr(request, "param", "default"))
    async with serve_app(app) as url:
        yield url, app.state.broker


def fiware_beat(tmp_path: Path, url: str, *, port: int | None = None, **options: Any) -> Beat:
    port = port or free_port()
    options.setdefault("notify_secret", SECRET)
    options.setdefault("subscription_check_interval", 0.2)
    settings = FiwareSettings(
        port=port,
        data_dir=tmp_path / "fiware",
        orion_url=url,
        notify_url=f"http://127.0.0.1:{port}/notify",
        **options,
    )
    return build(settings)


async def call(url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.request(method, path, **kwargs)
        response.raise_for_status()
        return response


async def subscribed(beat: Beat) -> None:
    await eventually(lambda: beat.readiness.ready, what="subscription in place")


def room(n: int, temperature: float) -> dict[str, Any]:
    return {
        "id": f"Room{n}",
        "type": "Room",
        "temperature": {"value": temperature, "type": "Number", "metadata": {}},
    }


@pytest.mark.parametrize(
    "fmt", ["normalized", "keyValues", "simplifiedNormalized", "simplifiedKeyValues"]
)
async def test_v2_formats_reach_sse(tmp_path: Path, orion: tuple[str, Any], fmt: str) -> None:
    url, _ = orion
    beat = fiware_beat(tmp_path, url, attrs_format=fmt)
    async with run_beat(beat) as base:
        await subscribed(beat)
        await call(url, "POST", "/v2/entities", json=room(1, 21.0))
        await call(url, "PATCH", "/v2/entities/Room1/attrs", json={"temperature": {"value": 24.5}})
        messages = await read_sse(f"{base}/events/entities?last_event_id=0", count=2)
    events = [m.json() for m in messages]
    assert [e["data"]["values"]["temperature"] for e in events] == [21.0, 24.5]
    assert all(e["subject"] == "Room1" and e["data"]["format"] == fmt for e in events)
    if fmt == "normalized":
        meta = events[1]["data"]["attributes"]["temperature"]["metadata"]
        assert meta["previousValue"]["value"] == 21.0
        assert meta["actionType"]["value"] == "update"
        assert events[1]["time"] is not None


@pytest.mark.parametrize("orion", ["default", "experimental"], indirect=True)
@pytest.mark.parametrize(
    ("fmt", "accept"),
    [
        ("normalized", "application/ld+json"),
        ("keyValues", "application/json"),
        ("concise", "application/json"),
    ],
)
async def test_ngsi_ld_with_context_in_body_or_link(
    tmp_path: Path, orion: tuple[str, Any], fmt: str, accept: str
) -> None:
    url, _broker = orion
    beat = fiware_beat(tmp_path, url, ngsi="ld", attrs_format=fmt, fiware_service=["farm"])
    entity = {
        "id": "urn:ngsi-ld:Sensor:1",
        "type": "Sensor",
        "filling": {
            "type": "Property",
            "value": 0.5,
            "unitCode": "C62",
            "observedAt": "2026-10-01T10:00:00Z",
        },
        "controlledAsset": {"type": "Relationship", "object": "urn:ngsi-ld:Building:farm001"},
    }
    async with run_beat(beat) as base:
        await subscribed(beat)
        headers = {"NGSILD-Tenant": "farm"}
        (sub,) = (await call(url, "GET", "/ngsi-ld/v1/subscriptions", headers=headers)).json()
        sub["notification"]["endpoint"]["accept"] = accept
        patch = {"notification": sub["notification"]}
        await call(
            url, "PATCH", f"/ngsi-ld/v1/subscriptions/{sub['id']}", json=patch, headers=headers
        )
        await call(
            url, "POST", "/ngsi-ld/v1/entities", json=entity, headers={"NGSILD-Tenant": "farm"}
        )
        (message,) = await read_sse(f"{base}/events?last_event_id=0", count=1)
    data = message.json()["data"]
    assert (data["ngsi"], data["tenant"], data["format"]) == ("ld", "farm", fmt)
    assert data["context"]
    assert data["values"] == {"filling": 0.5, "controlledAsset": "urn:ngsi-ld:Building:farm001"}
    # keyValues drops attribute types, so a relationship cannot be told from a text value
    expected = {} if fmt == "keyValues" else {"controlledAsset": "urn:ngsi-ld:Building:farm001"}
    assert data["relationships"] == expected
    assert data["notified_at"] and data["notification_id"].startswith("urn:ngsi-ld:Notification:")
    assert message.json()["time"].startswith(data["notified_at"][:19])
    if fmt != "keyValues":  # sub-properties reach the processed view
        filling = data["attributes"]["filling"]
        assert (filling["unitCode"], filling["observedAt"]) == ("C62", "2026-10-01T10:00:00Z")


@pytest.mark.parametrize("orion", ["default", "experimental"], indirect=True)
async def test_geojson_notifications_on_request(tmp_path: Path, orion: tuple[str, Any]) -> None:
    """``--ld-accept application/geo+json``: Orion-LD sends FeatureCollections; each Feature is
    one entity event with its geometry and @context."""
    url, broker = orion
    beat = fiware_beat(tmp_path, url, ngsi="ld", ld_accept="application/geo+json")
    entity = {
        "id": "urn:ngsi-ld:Animal:pig003",
        "type": "Animal",
        "heartRate": {"type": "Property", "value": 64, "unitCode": "5K"},
        "location": {
            "type": "GeoProperty",
            "value": {"type": "Point", "coordinates": [13.3, 52.5]},
        },
    }
    async with run_beat(beat) as base:
        await subscribed(beat)
        (sub,) = broker.subscriptions.values()
        assert sub.body["notification"]["endpoint"]["accept"] == "application/geo+json"
        await call(url, "POST", "/ngsi-ld/v1/entities", json=entity)
        (message,) = await read_sse(f"{base}/events?last_event_id=0", count=1)
    data = message.json()["data"]
    assert (data["ngsi"], data["id"], data["type"]) == ("ld", entity["id"], "Animal")
    assert data["geometry"] == {"type": "Point", "coordinates": [13.3, 52.5]}
    assert data["entity"]["type"] == "Feature" and data["context"]
    assert data["attributes"]["heartRate"]["unitCode"] == "5K"
    assert data["values"]["heartRate"] == 64


async def test_values_rows_are_named_by_the_subscription_attrs(
    tmp_path: Path, orion: tuple[str, Any]
) -> None:
    url, broker = orion
    beat = fiware_beat(
        tmp_path, url, attrs_format="values", notify_attributes=["humidity", "temperature"]
    )
    async with run_beat(beat) as base:
        await subscribed(beat)
        (sub,) = broker.subscriptions.values()
        assert sub.body["notification"]["attrs"] == ["humidity", "temperature"]
        humid = {**room(1, 21.0), "humidity": {"value": 40, "type": "Number", "metadata": {}}}
        await call(url, "POST", "/v2/entities", json=humid)
        (message,) = await read_sse(f"{base}/events?last_event_id=0", count=1)
    data = message.json()["data"]
    assert data["format"] == "values" and data["entity"] == [40, 21.0]
    assert data["values"] == {"humidity": 40, "temperature": 21.0}


async def test_values_names_survive_a_restart_of_the_beat(
    tmp_path: Path, orion: tuple[str, Any]
) -> None:
    """A restarted beat finds its subscription (it does not create one) and still knows the
    names: they come from the subscription the broker lists."""
    url, _ = orion
    options: dict[str, Any] = {
        "attrs_format": "values",
        "notify_attributes": ["temperature"],
        "port": free_port(),
    }
    first = fiware_beat(tmp_path, url, **options)
    async with run_beat(first):
        await subscribed(first)
    second = fiware_beat(tmp_path, url, **options)
    async with run_beat(second) as base:
        await subscribed(second)
        assert isinstance(second.source, SubscriptionKeeper)
        assert second.source.states["default"]["status"] == "active"
        await call(url, "POST", "/v2/entities", json=room(2, 19.5))
        (message,) = await read_sse(f"{base}/events?last_event_id=0", count=1)
    assert message.json()["data"]["values"] == {"temperature": 19.5}


async def test_tenants_each_get_a_subscription(tmp_path: Path, orion: tuple[str, Any]) -> None:
    url, broker = orion
    beat = fiware_beat(tmp_path, url, fiware_service=["north", "south"])
    async with run_beat(beat) as base:
        await subscribed(beat)
        for tenant, n in (("north", 1), ("south", 2)):
            await call(
                url,
                "POST",
                "/v2/entities",
                json=room(n, 20.0 + n),
                headers={"Fiware-Service": tenant},
            )
        messages = await read_sse(f"{base}/events?last_event_id=0", count=2)
    assert {m.json()["data"]["tenant"] for m in messages} == {"north", "south"}
    assert len(broker.subscriptions) == 2


async def test_big_pretty_bodies_from_8_concurrent_senders_all_arrive(
    tmp_path: Path, orion: tuple[str, Any]
) -> None:
    url, _ = orion
    beat = fiware_beat(tmp_path, url)
    padding = "x" * 2500

    async def send(client: httpx.AsyncClient, sender: int) -> None:
        for n in range(25):
            entity = {
                "id": f"E{sender}-{n}",
                "type": "T",
                "note": {"type": "Text", "value": padding, "metadata": {}},
            }
            body = json.dumps({"subscriptionId": "s", "data": [entity]}, indent=4)
            response = await client.post(
                "/notify",
                content=body,
                headers={
                    SECRET_HEADER: SECRET,
                    "Ngsiv2-AttrsFormat": "normalized",
                    "Content-Type": "application/json",
                },
            )
            assert response.status_code == 200

    async with run_beat(beat) as base, httpx.AsyncClient(base_url=base) as client:
        await asyncio.gather(*(send(client, s) for s in range(8)))
        messages = await read_sse(f"{base}/events?last_event_id=0", count=200)
    assert len({m.json()["subject"] for m in messages}) == 200


async def test_custom_text_payload_is_kept_losslessly(
    tmp_path: Path, orion: tuple[str, Any]
) -> None:
    url, _ = orion
    beat = fiware_beat(tmp_path, url)
    text = "Température élevée: Room1 ✓\nline two"
    async with run_beat(beat) as base:
        response = await call(
            base,
            "POST",
            "/notify",
            content=text.encode(),
            headers={
                SECRET_HEADER: SECRET,
                "Ngsiv2-AttrsFormat": "custom",
                "Content-Type": "text/plain",
            },
        )
        assert response.status_code == 200
        (message,) = await read_sse(f"{base}/events/raw?last_event_id=0", count=1)
    assert message.json()["data"]["text"] == text


async def test_bad_input_gets_a_clear_error_and_nothing_breaks(
    tmp_path: Path, orion: tuple[str, Any]
) -> None:
    url, _ = orion
    beat = fiware_beat(tmp_path, url, max_body_bytes=10_000)
    headers = {SECRET_HEADER: SECRET, "Content-Type": "application/json"}
    async with run_beat(beat) as base, httpx.AsyncClient(base_url=base) as client:
        broken = await client.post("/notify", content=b'{"data": [', headers=headers)
        text = await client.post(
            "/notify",
            content=b"plain text",
            headers={SECRET_HEADER: SECRET, "Content-Type": "text/plain"},
        )
        unauthorized = await client.post("/notify", content=b'{"data": []}')
        wrong = await client.post("/notify", content=b'{"data": []}', headers={SECRET_HEADER: "no"})
        huge = await client.post("/notify", content=b"[" + b"1," * 10_000 + b"1]", headers=headers)
        assert (await client.get("/healthz")).status_code == 200
        dead = await read_sse(f"{base}/events/deadletter?last_event_id=0", count=2)
        head = beat.log.head
    assert broken.status_code == 400 and "not JSON" in broken.json()["error"]
    assert text.status_code == 400 and "custom" in text.json()["error"]
    assert unauthorized.status_code == 401 and wrong.status_code == 401
    assert huge.status_code == 413
    assert head == 2  # the two dead letters; nothing from the unauthorised or oversized ones
    assert all(SECRET not in m.data for m in dead)


async def test_lost_and_inactive_subscriptions_heal(tmp_path: Path, orion: tuple[str, Any]) -> None:
    url, broker = orion
    beat = fiware_beat(tmp_path, url)
    async with run_beat(beat) as base, httpx.AsyncClient() as client:
        await subscribed(beat)
        await call(url, "POST", "/admin/restart", params={"lose_subscriptions": True})
        await eventually(lambda: len(broker.subscriptions) == 1, what="re-created")
        (sub,) = broker.subscriptions.values()
        await call(url, "PATCH", f"/v2/subscriptions/{sub.id}", json={"status": "inactive"})
        await eventually(lambda: sub.status == "active", what="re-activated")
        await call(url, "POST", "/v2/entities", json=room(7, 19.0))
        (message,) = await read_sse(f"{base}/events?last_event_id=0", count=1)

        async def reported_active() -> bool:
            ready = (await client.get(f"{base}/readyz")).json()
            return "default: active" in ready["checks"]["subscriptions"]["detail"]

        await eventually(reported_active, what="/readyz reporting the healed subscription")
    assert message.json()["subject"] == "Room7"


async def test_restart_reuses_its_subscription(tmp_path: Path, orion: tuple[str, Any]) -> None:
    url, broker = orion
    port = free_port()  # the same notification URL: a restart, not another beat
    for _ in range(2):
        beat = fiware_beat(tmp_path, url, port=port, notify_secret=None)
        async with run_beat(beat):
            await subscribed(beat)
    assert len(broker.subscriptions) == 1


async def test_changed_options_retire_the_previous_subscription(
    tmp_path: Path, orion: tuple[str, Any]
) -> None:
    """A beat restarted with other options (a narrower entity pattern, then another notification
    URL) deletes the subscription of its previous ones: the broker stops notifying what it no
    longer asks for (left alone, the narrower beat still got every entity through the old
    subscription, which has its secret and URL)."""
    url, broker = orion
    port = free_port()
    runs: list[dict[str, Any]] = [
        {"port": port},
        {"port": port, "id_pattern": "Room1"},
        {"port": free_port(), "id_pattern": "Room1"},
    ]
    descriptions = []
    for n, options in enumerate(runs):
        beat = fiware_beat(tmp_path, url, **options)
        async with run_beat(beat) as base:
            await subscribed(beat)
            assert isinstance(beat.source, SubscriptionKeeper)
            listed = [s.body["description"] for s in broker.subscriptions.values()]
            assert listed == [beat.source.description], f"run {n}: {listed}"
            descriptions.append(beat.source.description)
            head = beat.log.head
            update = {"actionType": "append", "entities": [room(2, n), room(1, n)]}
            await call(url, "POST", "/v2/op/update", json=update)
            messages = await read_sse(f"{base}/events?last_event_id={head}", count=1)
            if n:  # the first run asks for both: which one comes first is not ordered
                assert [m.json()["subject"] for m in messages] == ["Room1"], f"run {n}"
    assert len(set(descriptions)) == 3


async def test_writeback_round_trip(tmp_path: Path, orion: tuple[str, Any]) -> None:
    url, _broker = orion
    beat = fiware_beat(tmp_path, url, writeback_token="wb")
    async with run_beat(beat) as base, httpx.AsyncClient(base_url=base) as client:
        await subscribed(beat)
        await call(url, "POST", "/v2/entities", json=room(3, 18.0))
        update = [
            {
                "id": "Room3",
                "type": "Room",
                "prediction": {"type": "Number", "value": 19.2, "metadata": {}},
            }
        ]
        refused = await client.post("/writeback", json=update)
        response = await client.post(
            "/writeback", json=update, headers={"Authorization": "Bearer wb"}
        )
        messages = await read_sse(f"{base}/events?last_event_id=0", count=2)
    assert refused.status_code == 401
    assert response.status_code == 200
    assert response.json()["results"] == [{"id": "Room3", "ok": True, "status": 204}]
    stored = (await call(url, "GET", "/v2/entities/Room3")).json()
    assert stored["prediction"]["value"] == 19.2
    assert messages[1].json()["data"]["values"]["prediction"] == 19.2


async def test_bad_writeback_bodies_are_refused_and_counted(
    tmp_path: Path, orion: tuple[str, Any]
) -> None:
    url, _ = orion
    beat = fiware_beat(tmp_path, url, max_body_bytes=1000, writeback_open=True)
    async with run_beat(beat) as base, httpx.AsyncClient(base_url=base) as client:
        empty = await client.post("/writeback")
        garbage = await client.post("/writeback", content=b"\xff{not json")
        shape = await client.post("/writeback", json={"entities": [{"id": 3}]})
        huge = await client.post("/writeback", json=[{"id": "x", "pad": "y" * 2000}])
        # the tenant becomes a header: one that cannot be (found by Schemathesis: a 500)
        tenant = await client.post("/writeback", json={"entities": [], "tenant": "café"})
        number = await client.post("/writeback", json={"entities": [], "tenant": 7})
        healthy = await client.get("/healthz")
    statuses = [r.status_code for r in (empty, garbage, shape, huge, tenant, number)]
    assert statuses == [400, 400, 400, 413, 400, 400]
    assert "not JSON" in empty.json()["error"] and healthy.status_code == 200
    assert "tenant" in tenant.json()["error"]
    assert beat.metrics.source_errors.labels("writeback")._value.get() == 6


async def test_writeback_scope_the_broker_cannot_take_and_no_broker(
    tmp_path: Path, orion: tuple[str, Any]
) -> None:
    """Scope headers the broker would not take (not ASCII, not one service path) are a 400, a
    broker that cannot be reached a 502: each is counted, and good write-backs between them
    go through."""
    url, _ = orion
    beat = fiware_beat(tmp_path, url, writeback_open=True)
    update = [{"id": "Room3", "type": "Room", "t": {"type": "Number", "value": 1}}]
    hostile = [
        (b"Fiware-Service", "caf\u00e9".encode()),
        (b"Fiware-ServicePath", "/a/\u00fc".encode()),
        (b"Fiware-ServicePath", b"rooms"),
        (b"Fiware-ServicePath", b"/a,/b"),
        (b"Fiware-ServicePath", b"/x" * 11),
        (b"Fiware-ServicePath", b"/" + b"x" * 51),
    ]
    async with run_beat(beat) as base, httpx.AsyncClient(base_url=base) as client:
        await subscribed(beat)
        statuses, errors = [], []
        for header in hostile:
            refused = await client.post("/writeback", json=update, headers=[header])
            good = await client.post(
                "/writeback", json=update, headers={"Fiware-ServicePath": "/a/b_1"}
            )
            statuses.append((refused.status_code, good.status_code))
            errors.append(refused.json()["error"])
    assert statuses == [(400, 200)] * len(hostile)
    assert "Fiware-Service " in errors[0] and all("Fiware-ServicePath" in e for e in errors[1:])
    assert beat.metrics.source_errors.labels("writeback")._value.get() == len(hostile)

    gone = fiware_beat(tmp_path / "gone", f"http://127.0.0.1:{free_port()}", writeback_open=True)
    async with run_beat(gone) as base, httpx.AsyncClient(base_url=base) as client:
        unreachable = await client.post("/writeback", json=update)
        healthy = await client.get("/healthz")
    assert unreachable.status_code == 502 and "broker" in unreachable.json()["error"]
    assert healthy.status_code == 200
    assert gone.metrics.source_errors.labels("writeback")._value.get() == 1


async def test_unwritable_log_answers_503(tmp_path: Path, orion: tuple[str, Any]) -> None:
    url, _ = orion
    beat = fiware_beat(tmp_path, url)
    async with run_beat(beat) as base, httpx.AsyncClient(base_url=base) as client:
        loop = asyncio.get_running_loop()
        writer = await loop.run_in_executor(beat.log._writer_pool, beat.log._connect)
        writer.execute("PRAGMA query_only=1")
        body = json.dumps({"subscriptionId": "s", "data": [room(1, 1.0)]})
        response = await client.post("/notify", content=body, headers={SECRET_HEADER: SECRET})
        writer.execute("PRAGMA query_only=0")
    assert response.status_code == 503


async def test_emulator_throttling_drops_changes_inside_the_window(orion: tuple[str, Any]) -> None:
    url, _broker = orion
    received: list[bytes] = []
    sink = FastAPI()

    @sink.post("/")
    async def collect(request: Request) -> Response:
        received.append(await request.body())
        return Response(status_code=204)

    async with serve_app(sink) as receiver:
        sub = {
            "description": "t",
            "subject": {"entities": [{"idPattern": ".*"}]},
            "notification": {"http": {"url": receiver}},
            "throttling": 60,
        }
        await call(url, "POST", "/v2/subscriptions", json=sub)
        for n in range(3):
            await call(url, "POST", "/v2/entities", json=room(n, 1.0))
        await eventually(lambda: len(received) == 1, what="the first notification")
        await asyncio.sleep(0.3)
    assert len(received) == 1


async def test_remove_subscriptions_on_shutdown_and_ld_writeback(
    tmp_path: Path, orion: tuple[str, Any]
) -> None:
    url, broker = orion
    settings_options: dict[str, Any] = {
        "ngsi": "ld",
        "remove_subscriptions": True,
        "writeback_open": True,
    }
    beat = fiware_beat(tmp_path, url, **settings_options)
    async with run_beat(beat) as base, httpx.AsyncClient(base_url=base) as client:
        await subscribed(beat)
        entity = {
            "id": "urn:ngsi-ld:Room:9",
            "type": "Room",
            "temperature": {"type": "Property", "value": 20},
        }
        response = await client.post("/writeback", json=[entity])
        assert response.json()["results"] == [
            {"id": "urn:ngsi-ld:Room:9", "ok": True, "status": 201}
        ]
        stored = await call(url, "GET", "/ngsi-ld/v1/entities/urn:ngsi-ld:Room:9")
        assert stored.json()["temperature"]["value"] == 20
    assert len(broker.subscriptions) == 1
    keeper = beat.source
    assert isinstance(keeper, SubscriptionKeeper)
    await keeper.remove()
    assert broker.subscriptions == {}


async def test_writeback_needs_a_token_unless_started_open(
    tmp_path: Path, orion: tuple[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = orion
    update = [{"id": "Room:1", "type": "Room", "prediction": {"type": "Number", "value": 1}}]
    closed = fiware_beat(tmp_path / "closed", url)
    async with run_beat(closed) as base, httpx.AsyncClient(base_url=base) as client:
        anonymous = await client.post("/writeback", json=update)
        guessed = await client.post(
            "/writeback", json=update, headers={"Authorization": "Bearer x"}
        )
    assert anonymous.status_code == guessed.status_code == 403
    assert "--writeback-token" in anonymous.json()["error"]
    assert closed.metrics.source_errors.labels("writeback")._value.get() == 2
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/v2/entities/Room:1")).status_code == 404  # nothing written
    caplog.clear()
    opened = fiware_beat(tmp_path / "open", url, writeback_open=True)
    async with run_beat(opened) as base, httpx.AsyncClient(base_url=base) as client:
        written = await client.post("/writeback", json=update)
    assert written.status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("--writeback-open" in message for message in warnings)
