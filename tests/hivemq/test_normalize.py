"""Golden-file tests of the MQTT normaliser, plus its rejections and a property test."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beats.hivemq.normalize import MqttMessage, channel_for, normalize
from common.normalize import Rejected
from tests.asyncapi.validators import assert_match
from tests.support import fuzz_examples

GOLDEN = Path(__file__).parent / "golden"
RECEIVED = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)
CASES = sorted(p.name.removesuffix(".input.json") for p in GOLDEN.glob("*.input.json"))


def message_from(spec: dict[str, Any]) -> MqttMessage:
    if "payload_base64" in spec:
        payload = base64.b64decode(spec["payload_base64"])
    else:
        payload = spec["payload_text"].encode()
    properties = dict(spec["properties"])
    if "correlation_data_base64" in properties:
        properties["correlation_data"] = base64.b64decode(properties.pop("correlation_data_base64"))
    return MqttMessage(
        topic=spec["topic"],
        payload=payload,
        qos=spec["qos"],
        retain=spec["retain"],
        received_at=RECEIVED,
        properties=properties,
    )


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    spec = json.loads((GOLDEN / f"{case}.input.json").read_text())
    (event,) = normalize(message_from(spec), source="mqtt://broker:1883", channel="messages")
    actual = json.loads(event.to_json())
    actual["id"] = "<uuid>"
    expected_path = GOLDEN / f"{case}.expected.json"
    if os.environ.get("UPDATE_GOLDEN"):
        expected_path.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    assert actual == json.loads(expected_path.read_text())


def test_ids_are_unique() -> None:
    spec = json.loads((GOLDEN / "json_v311.input.json").read_text())
    ids = {normalize(message_from(spec), source="s")[0].id for _ in range(100)}
    assert len(ids) == 100


def message(payload: bytes, **properties: Any) -> MqttMessage:
    return MqttMessage("t", payload, 1, False, RECEIVED, properties)


def test_oversized_payload_is_rejected() -> None:
    with pytest.raises(Rejected, match="exceeds 10"):
        normalize(message(b"x" * 11), source="s", max_payload=10)
    assert normalize(message(b"x" * 10), source="s", max_payload=10)


def test_declared_json_that_is_not_json_is_rejected() -> None:
    with pytest.raises(Rejected, match="not valid JSON"):
        normalize(message(b"{oops", content_type="application/json"), source="s")


def test_declared_utf8_that_is_not_utf8_is_rejected() -> None:
    with pytest.raises(Rejected, match="UTF-8"):
        normalize(message(b"\xff\xfe", payload_format=1), source="s")


def test_undeclared_non_json_is_kept_not_rejected() -> None:
    (event,) = normalize(message(b"{oops"), source="s")
    assert event.data == "{oops"


def test_channel_mapping_first_match_wins_and_shared_filters_match() -> None:
    mapping = [("$share/g/city/+/alerts", "alerts"), ("city/#", "sensors")]
    assert channel_for("city/north/alerts", mapping) == "alerts"
    assert channel_for("city/north/temp", mapping) == "sensors"
    assert channel_for("other", mapping) == "messages"


@pytest.mark.fuzz
@settings(max_examples=fuzz_examples(300), deadline=None)
@given(
    payload=st.binary(max_size=512),
    content_type=st.none() | st.sampled_from(["application/json", "text/plain", "x/y+json"]),
    payload_format=st.none() | st.sampled_from([0, 1]),
)
def test_any_payload_is_normalised_or_rejected(
    payload: bytes, content_type: str | None, payload_format: int | None
) -> None:
    props: dict[str, Any] = {}
    if content_type is not None:
        props["content_type"] = content_type
    if payload_format is not None:
        props["payload_format"] = payload_format
    try:
        (event,) = normalize(message(payload, **props), source="s", max_payload=256)
    except Rejected:
        return
    assert_match([event])
    restored = json.loads(event.to_json())
    if "data_base64" in restored:
        assert base64.b64decode(restored["data_base64"]) == payload
    elif isinstance(restored.get("data"), str) and restored["datacontenttype"].startswith("text"):
        assert restored["data"].encode() == payload
    else:
        assert json.loads(payload) == restored.get("data")
