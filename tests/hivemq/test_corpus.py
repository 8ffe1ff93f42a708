"""The MQTT upstream corpus (``tests/hivemq/corpus``) through a real Mosquitto to a running beat,
for MQTT 3.1.1 and MQTT 5 (a beat and a publisher of each version), with publishes the beat must
dead-letter in between; every fact must reach the processed view on SSE."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.brokers import MosquittoBroker
from tests.corpus import Case, check_facts, load_corpus
from tests.hivemq.test_mqtt_beat import hivemq_beat, publisher, ready
from tests.support import read_sse, run_beat

CASES = load_corpus(Path(__file__).parent)


def _payload(publish: dict[str, Any]) -> bytes:
    if "payload_base64" in publish:
        return base64.b64decode(publish["payload_base64"])
    return str(publish["payload_text"]).encode()


def _properties(given: dict[str, Any]) -> Properties | None:
    if not given:
        return None
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    names = {
        "content_type": "ContentType",
        "response_topic": "ResponseTopic",
        "message_expiry": "MessageExpiryInterval",
        "payload_format": "PayloadFormatIndicator",
    }
    for name, paho in names.items():
        if name in given:
            setattr(props, paho, given[name])
    if "correlation_data_base64" in given:
        props.CorrelationData = base64.b64decode(given["correlation_data_base64"])
    if "user_properties" in given:
        props.UserProperty = [tuple(pair) for pair in given["user_properties"]]
    return props


@pytest.mark.parametrize("version", ["3.1.1", "5"])
async def test_every_corpus_file_reaches_the_processed_view(
    tmp_path: Path, mosquitto: MosquittoBroker, version: str
) -> None:
    cases: list[Case] = [c for c in CASES if c.spec["protocol"] == version]
    assert cases
    beat = hivemq_beat(tmp_path, mosquitto, mqtt_version=version, mqtt_qos=2)
    async with run_beat(beat) as base:
        await ready(base)
        async with publisher(mosquitto, v5=version == "5") as client:
            for case in cases:
                hostile = (
                    _properties({"content_type": "application/json"}) if version == "5" else None
                )
                await client.publish(
                    "test/hostile",
                    b"{not json" if hostile else b"\xff" * 2_000_000,
                    qos=1,
                    properties=hostile,
                )
                publish = case.spec["publish"]
                await client.publish(
                    publish["topic"],
                    _payload(publish),
                    qos=publish["qos"],
                    retain=publish["retain"],
                    properties=_properties(publish["properties"]),
                )
        expected = sum(len(c.facts) for c in cases)
        messages = await read_sse(f"{base}/events?last_event_id=0", count=expected + len(cases))
    events = [m.json() for m in messages if m.event == "beats.hivemq.message"]
    dead = [m.json() for m in messages if m.event == "beats.hivemq.deadletter"]
    assert len(dead) == len(cases)
    for case in cases:
        mine, events = events[: len(case.facts)], events[len(case.facts) :]
        check_facts(case, mine)
        assert all(e["time"] for e in mine), case.name
    assert not events
