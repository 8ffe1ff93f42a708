"""The Orion emulator (NGSI v2) over real HTTP, checked against ``orion-api.md`` and Orion's
functional tests: every notification format with Orion's headers, custom notifications,
triggering rules, failure accounting, expires / oneshot / throttling, delivery order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from beats.fiware.emulator import Broker
from beats.fiware.normalize import Notification, normalize
from tests.fiware.orion import Receiver, ok, room, subscribe, v2_sub
from tests.support import eventually, free_port

FORMAT_BODIES: dict[str, Callable[[str], Any]] = {
    "normalized": lambda sid: {
        "subscriptionId": sid,
        "data": [
            {
                "id": "Room1",
                "type": "Room",
                "temperature": {"type": "Number", "value": 23, "metadata": {}},
                "humidity": {"type": "Number", "value": 70, "metadata": {}},
            }
        ],
    },
    "keyValues": lambda sid: {
        "subscriptionId": sid,
        "data": [{"id": "Room1", "type": "Room", "temperature": 23, "humidity": 70}],
    },
    "values": lambda sid: {"subscriptionId": sid, "data": [[23, 70]]},
    "simplifiedNormalized": lambda sid: {
        "id": "Room1",
        "type": "Room",
        "temperature": {"type": "Number", "value": 23, "metadata": {}},
        "humidity": {"type": "Number", "value": 70, "metadata": {}},
    },
    "simplifiedKeyValues": lambda sid: {
        "id": "Room1",
        "type": "Room",
        "temperature": 23,
        "humidity": 70,
    },
}


@pytest.mark.parametrize("fmt", sorted(FORMAT_BODIES))
async def test_v2_notification_in_each_format_with_orions_headers(
    orion: tuple[httpx.AsyncClient, Broker], receiver: Receiver, fmt: str
) -> None:
    client, _ = orion
    tenant = {"Fiware-Service": "SmartCity", "Fiware-ServicePath": "/madrid"}
    sub = v2_sub(receiver.url + "/notify", attrs=["temperature", "humidity"], attrsFormat=fmt)
    sid = await subscribe(client, sub, **tenant)
    entity = room(1, 23, humidity={"type": "Number", "value": 70}, pressure={"value": 1})
    headers = {**tenant, "Fiware-Correlator": "corr-1"}
    await ok(await client.post("/v2/entities", json=entity, headers=headers), 201)
    (note,) = await receiver.wait(1)
    assert (note.method, note.path) == ("POST", "/notify")
    assert note.json() == FORMAT_BODIES[fmt](sid)
    assert note.body == json.dumps(note.json(), separators=(",", ":")).encode()  # compact
    assert note.headers["fiware-service"] == "smartcity"  # lower-cased, as Orion does
    assert note.headers["fiware-servicepath"] == "/madrid"
    assert note.headers["ngsiv2-attrsformat"] == fmt
    assert note.headers["fiware-correlator"] == "corr-1; cbnotif=1"
    assert note.headers["content-type"] == "application/json; charset=utf-8"
    assert note.headers["user-agent"].startswith("orion/")
    names = {sid: ["temperature", "humidity"]}
    (event,) = normalize(Notification(note.body, note.headers), source="t", value_names=names)
    assert event.data["values"] == {"temperature": 23, "humidity": 70}
    assert event.data["format"] == fmt


async def test_default_tenant_has_no_fiware_service_and_x_auth_token_propagates(
    orion: tuple[httpx.AsyncClient, Broker], receiver: Receiver
) -> None:
    client, _ = orion
    await subscribe(client, v2_sub(receiver.url))
    token = {"X-Auth-Token": "tok"}
    await ok(await client.post("/v2/entities", json=room(1, 20), headers=token), 201)
    (note,) = await receiver.wait(1)
    assert "fiware-service" not in note.headers
    assert note.headers["fiware-servicepath"] == "/"
    assert note.headers["x-auth-token"] == "tok"


async def test_custom_notifications(
    orion: tuple[httpx.AsyncClient, Broker], receiver: Receiver
) -> None:
    client, _ = orion
    text = {
        "url": receiver.url + "/entity/${id}",
        "method": "PUT",
        "qs": {"type": "${type}"},
        "headers": {"X-Mine": "t=${temperature}", "Accept": ""},
        "payload": "the value of the %22temperature%22 attribute %28of type Number%29 is "
        "${temperature}",
    }
    customs = [
        text,
        {"url": receiver.url + "/j", "json": {"t": "${temperature}", "s": "is ${temperature}"}},
        {
            "url": receiver.url + "/n",
            "ngsi": {"id": "prefix:${id}", "origin": {"value": "${service}", "type": "Text"}},
        },
        {"url": receiver.url + "/e", "payload": None},
    ]
    for custom in customs:
        sub = v2_sub("")
        sub["notification"] = {"httpCustom": custom}
        await subscribe(client, sub)
    await ok(await client.post("/v2/entities", json=room(1, 23.4)), 201)
    by_path = {n.path: n for n in await receiver.wait(4)}
    put = by_path["/entity/Room1"]
    assert (put.method, put.query) == ("PUT", {"type": "Room"})
    assert put.body.decode() == 'the value of the "temperature" attribute (of type Number) is 23.4'
    assert put.headers["ngsiv2-attrsformat"] == "custom"
    assert put.headers["content-type"] == "text/plain; charset=utf-8"
    assert put.headers["x-mine"] == "t=23.4" and "accept" not in put.headers
    assert by_path["/j"].json() == {"t": 23.4, "s": "is 23.4"}
    assert by_path["/j"].headers["ngsiv2-attrsformat"] == "custom"
    patched = by_path["/n"]
    assert patched.headers["ngsiv2-attrsformat"] == "normalized"
    assert patched.json()["data"][0]["id"] == "prefix:Room1"
    assert patched.json()["data"][0]["origin"]["value"] == ""  # default tenant
    assert by_path["/e"].body == b""
    raw = normalize(Notification(put.body, put.headers), source="t")
    assert raw[0].type == "beats.fiware.raw" and raw[0].data["text"] == put.body.decode()


async def test_builtin_metadata_alteration_types_and_forced_updates(
    orion: tuple[httpx.AsyncClient, Broker], receiver: Receiver
) -> None:
    client, _ = orion
    every = v2_sub(
        receiver.url + "/all",
        attrs=["temperature", "alterationType"],
        metadata=["previousValue", "actionType"],
    )
    every["subject"]["condition"] = {"alterationTypes": ["entityUpdate", "entityDelete"]}
    await subscribe(client, every)
    await subscribe(client, v2_sub(receiver.url + "/default"))
    await ok(await client.post("/v2/entities", json=room(1, 20)), 201)  # create: default only
    await ok(
        await client.patch("/v2/entities/Room1/attrs", json={"temperature": {"value": 21}}), 204
    )
    same = {"temperature": {"value": 21}}
    await ok(await client.patch("/v2/entities/Room1/attrs", json=same), 204)  # no change
    forced = "/v2/entities/Room1/attrs?options=forcedUpdate"
    await ok(await client.patch(forced, json=same), 204)
    await ok(await client.delete("/v2/entities/Room1"), 204)
    notes = await receiver.wait(7)
    await asyncio.sleep(0.1)
    assert len(receiver.received) == 7
    default = [n.json()["data"][0]["temperature"]["value"] for n in notes if n.path == "/default"]
    assert default == [20, 21, 21]  # create, change, forced — not the plain no-change update
    changes = [n.json()["data"][0] for n in notes if n.path == "/all"]
    assert [c["alterationType"]["value"] for c in changes] == [
        "entityChange",
        "entityUpdate",
        "entityChange",
        "entityDelete",
    ]
    first = changes[0]["temperature"]["metadata"]
    assert first["previousValue"] == {"type": "Number", "value": 20}
    assert first["actionType"] == {"type": "Text", "value": "update"}


async def test_condition_attrs_and_q(
    orion: tuple[httpx.AsyncClient, Broker], receiver: Receiver
) -> None:
    client, _ = orion
    sub = v2_sub(receiver.url, attrsFormat="keyValues")
    sub["subject"]["condition"] = {"attrs": ["temperature"], "expression": {"q": "temperature>25"}}
    await subscribe(client, sub)
    await ok(await client.post("/v2/entities", json=room(1, 20)), 201)
    for attrs in ({"pressure": {"value": 1}}, {"temperature": {"value": 30}}):
        await ok(await client.post("/v2/entities/Room1/attrs", json=attrs), 204)
    (note,) = await receiver.wait(1)
    await asyncio.sleep(0.1)
    assert len(receiver.received) == 1
    assert note.json()["data"][0]["temperature"] == 30


async def test_max_fails_limit_switches_the_subscription_off_as_orion_does(
    orion: tuple[httpx.AsyncClient, Broker],
) -> None:
    client, broker = orion
    dead = f"http://127.0.0.1:{free_port()}/notify"
    sid = await subscribe(client, v2_sub(dead, maxFailsLimit=2))
    sub = broker.subscriptions[sid]

    async def update(n: int) -> None:
        await ok(
            await client.post("/v2/entities?options=upsert", json=room(1, n)),
            201 if n == 0 else 204,
        )

    for n in range(3):
        await update(n)
    await eventually(lambda: sub.status == "inactive", what="inactive after the 3rd failure")
    shown = (await client.get(f"/v2/subscriptions/{sid}")).json()
    assert shown["status"] == "inactive"
    assert shown["notification"]["failsCounter"] == 3  # > maxFailsLimit 2
    assert shown["notification"]["timesSent"] == 3
    assert shown["notification"]["lastFailureReason"] == "Could not connect to server"
    await update(3)  # not triggered while inactive
    await ok(await client.patch(f"/v2/subscriptions/{sid}", json={"status": "active"}), 204)
    await update(4)
    await eventually(lambda: sub.times_sent == 4 and sub.status == "inactive", what="off again")
    assert sub.fails == 4  # re-activating does not reset the counter


async def test_an_http_error_answer_is_not_a_failure_for_orion(
    orion: tuple[httpx.AsyncClient, Broker], receiver: Receiver
) -> None:
    client, broker = orion
    sid = await subscribe(client, v2_sub(receiver.url + "/status/500", maxFailsLimit=1))
    for n in range(3):
        await ok(await client.post("/v2/entities", json=room(n, 1)), 201)
    await receiver.wait(3)
    await eventually(lambda: broker.subscriptions[sid].times_sent == 3, what="3 sent")
    shown = (await client.get(f"/v2/subscriptions/{sid}")).json()["notification"]
    assert shown["lastSuccessCode"] == 500 and "failsCounter" not in shown
    assert (await client.get(f"/v2/subscriptions/{sid}")).json()["status"] == "active"


async def test_expires_oneshot_and_throttling(
    orion: tuple[httpx.AsyncClient, Broker], receiver: Receiver
) -> None:
    client, _ = orion
    old = await subscribe(
        client, v2_sub(receiver.url + "/old") | {"expires": "2020-01-01T00:00:00Z"}
    )
    await subscribe(client, v2_sub(receiver.url + "/future") | {"expires": "2099-01-01T00:00:00Z"})
    once = await subscribe(client, v2_sub(receiver.url + "/once") | {"status": "oneshot"})
    await subscribe(client, v2_sub(receiver.url + "/slow") | {"throttling": 60})
    for n in range(3):
        await ok(await client.post("/v2/entities", json=room(n, n)), 201)
    await receiver.wait(5)
    await asyncio.sleep(0.1)
    paths = [n.path for n in receiver.received]
    assert paths.count("/future") == 3 and paths.count("/once") == 1
    assert paths.count("/slow") == 1 and "/old" not in paths
    assert (await client.get(f"/v2/subscriptions/{old}")).json()["status"] == "expired"
    assert (await client.get(f"/v2/subscriptions/{once}")).json()["status"] == "inactive"


async def test_order_is_kept_and_a_slow_receiver_does_not_block_updates(
    orion: tuple[httpx.AsyncClient, Broker], receiver: Receiver
) -> None:
    client, _ = orion
    await subscribe(client, v2_sub(receiver.url, attrsFormat="keyValues"))
    receiver.delay = 0.05
    loop = asyncio.get_running_loop()
    started = loop.time()
    for n in range(20):
        await ok(
            await client.post("/v2/entities?options=upsert", json=room(1, n)),
            201 if n == 0 else 204,
        )
    assert loop.time() - started < 0.05 * 20  # the updates did not wait for the deliveries
    notes = await receiver.wait(20)
    assert [n.json()["data"][0]["temperature"] for n in notes] == list(range(20))
