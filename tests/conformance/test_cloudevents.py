"""CloudEvents conformance of everything the beats publish, on SSE and on Kafka.

Each beat runs against its real upstream (Mosquitto, the Orion, Ditto and OpenCTI emulators)
with a real Kafka-protocol broker (tansu), and is fed its upstream corpus (``tests/<beat>/
corpus``) plus what makes its other event kinds (dead letters, custom payloads, snapshots). Every
event read from ``/events`` and every record read from Kafka must then pass the Python SDK (the
current API and the 1.x ``from_json``), the JavaScript SDK (``new CloudEvent``, ``HTTP.toEvent``,
``Kafka.toEvent``), the CloudEvents JSON schema and the type system (int32 Integers, ``time``
on every event): see :mod:`tests.conformance.validators`. The beat's ``/asyncapi.json`` must
pass the official AsyncAPI parser, name every Kafka topic read, and every event must match the
message of its type there (:mod:`tests.asyncapi.validators`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from cloudevents.v1.kafka import KafkaMessage as V1KafkaMessage
from cloudevents.v1.kafka import from_structured as v1_from_structured

from beats.ditto.emulator import create_app as ditto_app
from beats.fiware.emulator import create_app as orion_app
from beats.fiware.subscriptions import SECRET_HEADER
from beats.opencti.emulator import create_app as opencti_app
from common.service import Beat
from tests.asyncapi.validators import EventChecker, parse_errors
from tests.brokers import KafkaBroker, MosquittoBroker
from tests.conformance.validators import (
    Record,
    check_js,
    check_python,
    check_schema,
    check_type_system,
)
from tests.corpus import load_corpus
from tests.support import eventually, read_sse, run_beat, serve_app

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
TESTS = Path(__file__).parent.parent
Feed = Callable[[str, str, Beat], Awaitable[None]]


async def _kafka_records(bootstrap: str, beat: str, count: int) -> list[Record]:
    """Every record of the beat's topics, from the beginning, as a consumer receives it."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    records: list[Record] = []
    try:
        topics = [t for t in await consumer.topics() if t.startswith(f"beats.{beat}.")]
        consumer.subscribe(topics)
        async with asyncio.timeout(30):
            while len(records) < count:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records += [
                        {
                            "via": "kafka",
                            "value": r.value.decode(),
                            "key": r.key.decode() if r.key is not None else None,
                            "headers": {k: v.decode() for k, v in r.headers},
                            "topic": r.topic,
                        }
                        for r in batch
                    ]
    finally:
        await consumer.stop()
    return records


async def _conforms(beat: Beat, base: str, kafka: KafkaBroker, workdir: Path) -> set[str]:
    """Validate every event of ``beat`` on SSE and Kafka; the event types seen."""
    await eventually(lambda: beat.forwarder is not None and beat.forwarder.lag == 0, timeout=30)
    head = beat.log.head
    sse = await read_sse(f"{base}/events?last_event_id=0", count=head, timeout=20)
    records: list[Record] = [
        {"via": "sse", "value": m.data, "key": None, "headers": {}} for m in sse
    ]
    records += await _kafka_records(kafka.bootstrap, beat.name, head)
    problems: list[str] = []
    for record in records:
        event = json.loads(record["value"])
        where = f"{record['via']} {event.get('type')} {event.get('id')}"
        found = check_schema(event) + check_type_system(event) + check_python(record)
        problems += [f"{where}: {p}" for p in found]
    for record, verdict in zip(records, check_js(records, workdir), strict=True):
        if not verdict["ok"]:
            event = json.loads(record["value"])
            problems.append(f"{record['via']} {event.get('type')}: JS SDK: {verdict['error']}")
    problems += await _match_asyncapi(base, records, workdir)
    assert not problems, "\n".join(problems[:40])
    assert len([r for r in records if r["via"] == "kafka"]) >= head
    return {json.loads(r["value"])["type"] for r in records}


async def _match_asyncapi(base: str, records: list[Record], workdir: Path) -> list[str]:
    """The beat's ``/asyncapi.json`` passes the official parser, and every record matches the
    message of its type there (:mod:`tests.asyncapi.validators`)."""
    async with httpx.AsyncClient() as http:
        document = (await http.get(f"{base}/asyncapi.json")).json()
    problems = [f"asyncapi.json: {e}" for e in parse_errors({"beat": document}, workdir)["beat"]]
    checker = EventChecker(document)
    for record in records:
        problems += [f"{record['via']} {p}" for p in checker.problems(json.loads(record["value"]))]
    kafka = {c["address"] for c in document["channels"].values() if "kafka" in str(c["servers"])}
    problems += [f"topic {t} not in asyncapi.json" for t in _topics(records) - kafka]
    return problems


def _topics(records: list[Record]) -> set[str]:
    return {r["topic"] for r in records if r["via"] == "kafka"}


def _kafka_options(kafka: KafkaBroker) -> dict[str, Any]:
    return {"kafka_bootstrap": kafka.bootstrap, "kafka_idempotence": False}


async def test_mqtt_events_conform(
    tmp_path: Path, mosquitto: MosquittoBroker, kafka: KafkaBroker
) -> None:
    from tests.hivemq.test_corpus import _payload, _properties
    from tests.hivemq.test_mqtt_beat import hivemq_beat, publisher, ready

    beat = hivemq_beat(tmp_path, mosquitto, mqtt_version="5", mqtt_qos=2, **_kafka_options(kafka))
    async with run_beat(beat) as base:
        await ready(base)
        for case in load_corpus(TESTS / "hivemq"):  # 3.1.1 and 5 publishers, one v5 beat
            async with publisher(mosquitto, v5=case.spec["protocol"] == "5") as client:
                publish = case.spec["publish"]
                await client.publish(
                    publish["topic"],
                    _payload(publish),
                    qos=publish["qos"],
                    properties=_properties(publish["properties"]),
                )
        async with publisher(mosquitto) as client:
            await client.publish("test/too-big", b"x" * 2_000_000, qos=1)
        cases = load_corpus(TESTS / "hivemq")
        await eventually(lambda: beat.log.head >= len(cases) + 1, what="every publish")
        types = await _conforms(beat, base, kafka, tmp_path)
    assert types == {"beats.hivemq.message", "beats.hivemq.deadletter"}


async def test_fiware_events_conform(tmp_path: Path, kafka: KafkaBroker) -> None:
    from tests.fiware.test_fiware_beat import SECRET, fiware_beat

    cases = load_corpus(TESTS / "fiware")
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(serve_app(orion_app()))
        beat = fiware_beat(tmp_path, url, **_kafka_options(kafka))
        base = await stack.enter_async_context(run_beat(beat))
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=base))
        secret = {SECRET_HEADER: SECRET}
        for case in cases:
            body = json.dumps(case.spec["body"]).encode()
            response = await client.post(
                "/notify", content=body, headers={**secret, **case.spec["headers"]}
            )
            assert response.status_code == 200, case.name
        custom = {**secret, "Ngsiv2-AttrsFormat": "custom", "Content-Type": "text/plain"}
        await client.post("/notify", content=b"Room1 is hot", headers=custom)
        await client.post("/notify", content=b"{not json", headers=secret)
        await client.post(
            f"{url}/v2/entities", json={"id": "R1", "type": "Room", "t": {"value": 1}}
        )
        expected = sum(len(c.facts) for c in cases) + 3  # raw, dead letter, the broker's
        await eventually(lambda: beat.log.head >= expected, what="the broker's notification")
        types = await _conforms(beat, base, kafka, tmp_path)
    assert types == {"beats.fiware.entity", "beats.fiware.raw", "beats.fiware.deadletter"}


async def test_ditto_events_conform(tmp_path: Path, kafka: KafkaBroker) -> None:
    from tests.ditto.test_ditto_beat import api, ditto_beat, subscribed

    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(serve_app(ditto_app(token="jwt-1")))
        beat = ditto_beat(tmp_path, url, **_kafka_options(kafka))
        base = await stack.enter_async_context(run_beat(beat))
        await subscribed(beat)
        cases = load_corpus(TESTS / "ditto")
        for case in cases:
            for frame in case.spec["frames"]:
                await api(url, "POST", "/admin/raw", content=json.dumps(frame).encode())
        await api(url, "POST", "/admin/raw", content=b"{broken")
        await api(url, "PUT", "/api/2/things/org.works:car-1", json={"attributes": {"x": 1}})
        expected = sum(len(c.facts) for c in cases) + 2  # the dead letter, the thing created
        await eventually(lambda: beat.log.head >= expected, what="every frame committed")
        await api(url, "POST", "/admin/drop")  # the reconnect reconciles: snapshots
        await eventually(lambda: beat.log.head > expected, what="a snapshot")
        types = await _conforms(beat, base, kafka, tmp_path)
    assert {
        "beats.ditto.twin.created",
        "beats.ditto.twin.modified",
        "beats.ditto.twin.merged",
        "beats.ditto.twin.deleted",
        "beats.ditto.twin.snapshot",
        "beats.ditto.live.message",
        "beats.ditto.live.response",
        "beats.ditto.live.command",
        "beats.ditto.live.modified",
        "beats.ditto.error",
        "beats.ditto.deadletter",
    } <= types


async def test_opencti_events_conform(tmp_path: Path, kafka: KafkaBroker) -> None:
    from tests.opencti.conftest import TOKEN
    from tests.opencti.test_opencti_beat import add, opencti_beat

    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(
            serve_app(opencti_app(token=TOKEN, heartbeat_interval=0.2))
        )
        cases = load_corpus(TESTS / "opencti")
        for case in cases:
            await add(url, case.spec["frames"], shared_id=bool(case.spec.get("shared_id")))
        await add(url, [{"kind": "create", "raw": "{not json"}])
        beat = opencti_beat(tmp_path, url, **_kafka_options(kafka))
        base = await stack.enter_async_context(run_beat(beat))
        expected = sum(len(c.facts) for c in cases) + 1
        await eventually(lambda: beat.log.head >= expected, what="every frame committed")
        types = await _conforms(beat, base, kafka, tmp_path)
    assert types == {
        "beats.opencti.create",
        "beats.opencti.update",
        "beats.opencti.merge",
        "beats.opencti.delete",
        "beats.opencti.deadletter",
    }


def test_the_1x_kafka_binding_takes_datacontenttype_from_the_kafka_header() -> None:
    """Why the README sends Python 1.x users to ``from_json``: the structured-mode Kafka binding
    of the 1.x API overwrites ``datacontenttype`` with the record's ``content-type`` header,
    which the CloudEvents Kafka binding requires to be the event format's media type."""
    event = {
        "specversion": "1.0",
        "id": "x-1",
        "source": "mqtt://broker",
        "type": "beats.hivemq.message",
        "time": "2026-05-04T10:00:00Z",
        "datacontenttype": "text/plain; charset=utf-8",
        "data": "open",
    }
    value = json.dumps(event).encode()
    message = V1KafkaMessage(
        headers={"content-type": b"application/cloudevents+json"}, key=b"k", value=value
    )
    assert v1_from_structured(message)["datacontenttype"] == "application/cloudevents+json"
    record = {
        "via": "kafka",
        "value": value.decode(),
        "key": "k",
        "headers": {"content-type": "application/cloudevents+json"},
    }
    assert check_python(record) == []  # from_json and the current API read it right
