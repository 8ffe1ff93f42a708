"""The AsyncAPI documents: ``docs/asyncapi.json`` is what the code generates now, the official
parser accepts it and the gateway's, and every normaliser golden output matches its message.

The beats' own served documents, and every event they emit against the real upstreams (SSE
and Kafka), are checked in :mod:`tests.conformance.test_cloudevents`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiomqtt import Client

from beats.asyncapi import DOCUMENT, main, render, system_document
from beats.catalog import EVENTS
from beats.opencti.schema import Tlp
from beats.opencti.stix import TLP_LEVELS
from common.schema import dataschema_uri
from gateway.settings import GatewaySettings
from tests.asyncapi.validators import EventChecker, as_committed, parse_errors
from tests.brokers import MosquittoBroker
from tests.gateway.support import run_gateway
from tests.hivemq.test_mqtt_beat import hivemq_beat, publisher, ready
from tests.support import eventually, free_port, read_sse, run_beat

TESTS = Path(__file__).parent.parent
GOLDEN = sorted(TESTS.glob("*/golden/*.expected.json"))


def golden_events() -> list[tuple[str, dict[str, Any]]]:
    """Every event of the normaliser goldens, as the log would commit it (a ``sequence``;
    a ``time`` where the golden case gave the normaliser no receive time)."""
    found = []
    for path in GOLDEN:
        expected = json.loads(path.read_text())
        for event in expected if isinstance(expected, list) else [expected]:
            if "type" in event:  # not a rejection
                found.append((f"{path.parent.parent.name}/{path.name}", as_committed(event)))
    return found


def test_docs_asyncapi_json_is_what_the_code_generates() -> None:
    assert DOCUMENT.read_text() == render(system_document()), (
        "docs/asyncapi.json is stale: run python -m beats.asyncapi"
    )


def test_the_command_writes_the_document_and_checks_it(tmp_path: Path) -> None:
    """``python -m beats.asyncapi [--check] [PATH]``, as docs/asyncapi.md shows it."""
    path = tmp_path / "asyncapi.json"
    assert main(["--check", str(path)]) == 1  # missing
    assert main([str(path)]) == 0 and main(["--check", str(path)]) == 0
    path.write_text(path.read_text().replace("SSE", "sse", 1))
    assert main(["--check", str(path)]) == 1
    assert main(["--check"]) == 0  # docs/asyncapi.json


def test_the_parser_accepts_the_system_document_and_rejects_a_broken_one(
    tmp_path: Path,
) -> None:
    document = system_document()
    broken = copy.deepcopy(document)
    broken["components"]["schemas"]["beats.fiware.raw"]["properties"]["text"]["type"] = "text"
    errors = parse_errors({"system": document, "broken": broken}, tmp_path)
    assert errors["system"] == []
    assert any("properties/text/type" in error for error in errors["broken"])


def test_every_type_has_one_message_whose_dataschema_is_the_id_of_its_data_schema() -> None:
    document = system_document()
    messages, schemas = document["components"]["messages"], document["components"]["schemas"]
    for spec in (spec for specs in EVENTS.values() for spec in specs):
        payload = messages[spec.type]["payload"]
        assert payload["properties"]["dataschema"]["const"] == dataschema_uri(spec.type)
        assert schemas[spec.type]["$id"] == dataschema_uri(spec.type)
    assert set(Tlp.__args__) == set(TLP_LEVELS)  # type: ignore[attr-defined]


def test_every_golden_event_matches_its_message() -> None:
    checker = EventChecker(system_document())
    events = golden_events()
    problems = [f"{case}: {p}" for case, event in events for p in checker.problems(event)]
    assert not problems, "\n".join(problems[:40])
    assert {event["beat"] for _, event in events} == {"hivemq", "fiware", "ditto", "opencti"}


@pytest.mark.parametrize(
    ("member", "value"),
    [("data.unknown", 1), ("data.thing_id", 7), ("sequence", None), ("undeclared", "x")],
)
def test_an_event_that_differs_from_its_message_is_refused(member: str, value: Any) -> None:
    checker = EventChecker(system_document())
    event = copy.deepcopy(next(e for case, e in golden_events() if case.startswith("ditto/")))
    target, _, name = member.rpartition(".")
    holder = event[target] if target else event
    if value is None:
        del holder[name]
    else:
        holder[name] = value
    assert checker.problems(event)


async def test_the_gateway_serves_a_document_its_streams_match(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """A real HiveMQ beat (no Kafka) behind the gateway: both documents parse, and every event
    of ``/streams/hivemq`` matches the gateway's (the channel list: what the beat told it)."""
    beat = hivemq_beat(tmp_path, mosquitto, mqtt_channel=["test/doors/#=doors"])
    async with run_beat(beat) as beat_base:
        await ready(beat_base)
        settings = GatewaySettings(
            port=free_port(), beat=[f"hivemq={beat_base}"], status_interval=0.2
        )
        async with run_gateway(settings) as (gateway, base), httpx.AsyncClient() as http:
            await eventually(lambda: gateway.poller.statuses["hivemq"].channels_known)
            await _publish(mosquitto)
            await eventually(lambda: beat.log.head >= 3, what="three messages")
            document = (await http.get(f"{base}/asyncapi.json")).json()
            own = (await http.get(f"{beat_base}/asyncapi.json")).json()
            messages = await read_sse(f"{base}/streams/hivemq?last_event_id=0", count=3)
    channel = document["channels"]["gateway-streams-hivemq-channel"]
    assert channel["parameters"]["channel"]["enum"] == ["deadletter", "doors", "messages"]
    assert parse_errors({"gateway": document, "beat": own}, tmp_path) == {
        "gateway": [],
        "beat": [],
    }
    assert set(own["servers"]) == {"sse"}  # no Kafka: no Kafka server, no topics
    assert own["servers"]["sse"]["host"] == beat_base.removeprefix("http://")
    assert {c["address"] for c in own["channels"].values()} == {
        "/events", "/events/deadletter", "/events/doors", "/events/messages"}  # fmt: skip
    events = [json.loads(m.data) for m in messages]
    assert [e["dataschema"] for e in events] == [dataschema_uri("beats.hivemq.message")] * 3
    assert EventChecker(document).check(events) == []


async def _publish(broker: MosquittoBroker) -> None:
    client: Client
    async with publisher(broker, v5=True) as client:
        await client.publish("test/doors/1", b'{"open": true}', qos=1)
        await client.publish("test/text", b"hello", qos=0)
        await client.publish("test/binary", b"\xff\x00", qos=1)
