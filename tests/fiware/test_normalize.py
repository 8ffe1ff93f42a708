"""The FIWARE notification normaliser: golden files for every v2 and LD format, the shared
shape, natural ids, rejections, and Hypothesis (random and mutated bodies only ever normalise or
raise ``Rejected``).

``tests/fiware/golden/<case>.input.json`` holds ``headers`` and ``body`` (or ``raw`` text) modelled
on Orion's manual and functional tests and the NGSI-LD tutorials (``note`` says which);
``<case>.expected.json`` the events. ``UPDATE_GOLDEN=1`` rewrites the expected files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beats.fiware.normalize import Notification, normalize
from common.normalize import Rejected
from tests.asyncapi.validators import assert_match
from tests.support import fuzz_examples

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name.removesuffix(".input.json") for p in GOLDEN.glob("*.input.json"))
SOURCE = "http://orion:1026"
VALUE_NAMES = {"5a2": ["temperature", "humidity"]}


def spec(case: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((GOLDEN / f"{case}.input.json").read_text())
    return loaded


def notification(case: str, *, pretty: bool = False) -> Notification:
    given_spec = spec(case)
    if given_spec["raw"] is not None:
        body = given_spec["raw"].encode()
    else:
        body = json.dumps(given_spec["body"], indent=2 if pretty else None).encode()
    return Notification(body, given_spec["headers"])


def events(case: str) -> list[dict[str, Any]]:
    found = normalize(notification(case), source=SOURCE, value_names=VALUE_NAMES)
    return [json.loads(e.to_json()) for e in found]


def one(case: str) -> dict[str, Any]:
    (event,) = events(case)
    return event


def test_there_is_a_golden_case_for_every_format() -> None:
    formats = {(e["data"].get("ngsi"), e["data"].get("format")) for c in CASES for e in events(c)}
    assert formats >= {
        ("v2", "normalized"),
        ("v2", "keyValues"),
        ("v2", "values"),
        ("v2", "simplifiedNormalized"),
        ("v2", "simplifiedKeyValues"),
        ("ld", "normalized"),
        ("ld", "keyValues"),
        ("ld", "concise"),
        ("v1", "legacy"),
        (None, None),  # custom → raw
    }


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    actual = events(case)
    expected_path = GOLDEN / f"{case}.expected.json"
    if os.environ.get("UPDATE_GOLDEN"):
        expected_path.write_text(json.dumps(actual, indent=2, ensure_ascii=False) + "\n")
    assert actual == json.loads(expected_path.read_text())


@pytest.mark.parametrize("case", [c for c in CASES if spec(c)["raw"] is None])
def test_pretty_printed_bodies_normalise_the_same(case: str) -> None:
    compact = normalize(notification(case), source=SOURCE)
    pretty = normalize(notification(case, pretty=True), source=SOURCE)
    assert [e.data for e in compact] == [e.data for e in pretty]


@pytest.mark.parametrize("case", CASES)
def test_header_names_are_matched_in_any_case(case: str) -> None:
    given_spec = spec(case)
    body = notification(case).body
    for transform in (str.lower, str.upper):
        headers = {transform(k): v for k, v in given_spec["headers"].items()}
        same = normalize(Notification(body, headers), source=SOURCE, value_names=VALUE_NAMES)
        assert [json.loads(e.to_json()) for e in same] == events(case)


def test_one_shape_for_v2_and_ld() -> None:
    v2, ld = one("v2_normalized"), one("ld_normalized_context_in_body")
    for event in (v2, ld):
        assert event["type"] == "beats.fiware.entity"
        assert event["subject"] == event["partitionkey"] == event["data"]["id"]
        assert set(event["data"]) == set(v2["data"])
    temperature = v2["data"]["attributes"]["temperature"]
    assert (temperature["unitCode"], temperature["previousValue"]) == ("CEL", 21.5)
    assert temperature["actionType"] == "update"
    assert temperature["metadata"]["previousValue"] == {"type": "Number", "value": 21.5}
    assert (v2["data"]["tenant"], v2["data"]["service_path"]) == ("smartcity", "/madrid/rooms")
    assert v2["data"]["relationships"] == {"refBuilding": "Building1"}
    assert v2["data"]["geo"] == {"location": {"type": "Point", "coordinates": [-3.7, 40.4]}}
    assert v2["data"]["alteration_type"] == "entityChange"
    assert "alterationType" not in v2["data"]["values"]
    assert v2["time"] == "2026-10-01T10:00:00Z"  # the newest attribute dateModified
    filling = ld["data"]["attributes"]["filling"]
    assert (filling["unitCode"], filling["observedAt"]) == ("C62", "2026-12-09T16:25:12.000Z")
    assert filling["metadata"]["providedBy"] == {
        "type": "Relationship",
        "object": "urn:ngsi-ld:Camera:C1",
        "metadata": {},
    }
    assert ld["data"]["relationships"] == {"controlledAsset": "urn:ngsi-ld:Building:barn002"}
    assert ld["data"]["geo"]["location"]["coordinates"] == [13.3986, 52.5547]
    assert (ld["data"]["tenant"], ld["data"]["service_path"]) == ("farm", None)
    assert ld["time"] == "2026-12-09T16:25:12.193000Z"  # notifiedAt


def test_nothing_the_broker_sent_is_lost() -> None:
    for case in CASES:
        given_spec = spec(case)
        for index, event in enumerate(events(case)):
            data = event["data"]
            if event["type"] == "beats.fiware.raw":
                assert data["text"] == given_spec["raw"]
                continue
            body = given_spec["body"]
            content = "contextResponses" if "contextResponses" in body else "data"
            if content not in body:
                assert data["entity"] == body
                continue
            sent = body[content]
            if isinstance(sent, dict):  # a GeoJSON FeatureCollection
                sent = sent["features"]
            assert data["entity"] == sent[index]
            assert data["notification"] == {k: v for k, v in body.items() if k != content}


def test_ld_context_from_body_link_or_entity() -> None:
    assert one("ld_normalized_context_in_body")["data"]["context"].endswith("context.jsonld")
    linked = one("ld_normalized_context_in_link")["data"]
    assert linked["context"] == (
        "https://fiware.github.io/tutorials.Step-by-Step/tutorials-context.jsonld"
    )
    assert one("ld_no_headers_detected_from_body")["data"]["context"][0].startswith("http")


def test_concise_and_simplified_forms() -> None:
    concise = one("ld_concise")["data"]
    attributes = concise["attributes"]
    assert attributes["P2"] == {"type": "Property", "value": "ok", "metadata": {}}
    assert attributes["P1"]["metadata"]["Sub-R1"]["object"] == "urn:E1"
    assert attributes["R"]["type"] == "Relationship"
    assert attributes["location"]["type"] == "GeoProperty"
    assert attributes["L"]["lang"] == "en"
    assert concise["relationships"] == {"R": "urn:ngsi-ld:Building:1"}
    simplified = one("ld_keyvalues_simplified")["data"]
    assert simplified["format"] == "keyValues"
    assert simplified["values"]["L"] == "yes"
    assert simplified["relationships"] == {}  # keyValues drops the types
    assert simplified["geo"] == {"where": {"type": "Point", "coordinates": [1, 2]}}


def test_multi_attributes_and_previous_values() -> None:
    data = one("ld_multi_attribute")["data"]
    speed = data["attributes"]["speed"]
    assert speed["value"] == 54  # the default instance (no datasetId)
    assert [i.get("datasetId") for i in speed["instances"]] == [
        "urn:ngsi-ld:Property:speedometerA4567-speed",
        "urn:ngsi-ld:Property:gpsBxyz123-speed",
        None,
    ]
    assert speed["instances"][0]["previousValue"] == 50
    assert data["attributes"]["driver"]["previousValue"] == "urn:ngsi-ld:Person:Alice"
    assert data["values"]["name"] == {"en": "car", "es": "coche"}


def test_v2_geo_types_become_geojson() -> None:
    geo = one("v2_geo_types")["data"]["geo"]
    assert geo["entrance"] == {"type": "Point", "coordinates": [-3.691944, 40.418889]}
    assert geo["path"]["type"] == "LineString"
    assert geo["area"]["type"] == geo["lawn"]["type"] == "Polygon"
    assert len(geo["area"]["coordinates"][0]) == 5
    assert "broken" not in geo


def test_values_format_names_its_columns_from_the_subscription() -> None:
    event = one("v2_values")
    assert event["data"]["values"] == {"temperature": 23, "humidity": 70}
    assert event["subject"] == "5a2"
    unnamed = normalize(notification("v2_values"), source=SOURCE)
    assert unnamed[0].data["values"] == {"attr0": 23, "attr1": 70}


def test_custom_payloads_become_raw_events_losslessly() -> None:
    text = one("v2_custom_text")
    assert (text["type"], text["subject"]) == ("beats.fiware.raw", "custom")
    assert text["partitionkey"] == "smartcity/"
    assert json.loads(notification("v2_custom_json").body) == one("v2_custom_json")["data"]["json"]
    assert one("v2_custom_empty")["data"]["text"] == ""
    binary = normalize(
        Notification(b"\xff\x00\x01", {"Ngsiv2-AttrsFormat": "custom"}), source=SOURCE
    )
    assert binary[0].data["base64"] == "/wAB"


def test_ids_are_natural() -> None:
    first = [e.id for e in normalize(notification("v2_normalized"), source=SOURCE)]
    again = [e.id for e in normalize(notification("v2_normalized"), source=SOURCE)]
    assert first == again
    given_spec = spec("v2_normalized")
    given_spec["body"]["data"][0]["humidity"]["value"] = 71  # same correlator, new content
    changed = Notification(json.dumps(given_spec["body"]).encode(), given_spec["headers"])
    assert normalize(changed, source=SOURCE)[0].id not in first
    ids = [e["id"] for c in CASES for e in events(c)]
    assert len(ids) == len(set(ids))


def test_a_batch_of_entities_gives_one_event_each() -> None:
    body = {"subscriptionId": "s", "data": [{"id": f"E{n}", "type": "T", "a": n} for n in range(3)]}
    found = normalize(Notification(json.dumps(body).encode(), {}), source=SOURCE)
    assert [e.subject for e in found] == ["E0", "E1", "E2"]
    assert [e.data["format"] for e in found] == ["keyValues"] * 3
    assert len({e.id for e in found}) == 3


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        (b"{not json", {"Content-Type": "application/json"}, "not JSON"),
        (b"hello there", {"Content-Type": "text/plain"}, "custom"),
        (b'{"a": NaN}', {}, "not JSON"),
        (b'"a string"', {}, "not a JSON object"),
        (b"[[1, 2]]", {"Ngsiv2-AttrsFormat": "values"}, "not a JSON object"),
        (b'{"foo": 1}', {}, "neither a 'data' list nor an entity"),
        (b'{"type": "Notification", "data": 5}', {}, "no 'data' list"),
        (b'{"data": [{"type": "Room"}]}', {}, "no string 'id'"),
        (b'{"data": [{"id": ""}]}', {}, "no string 'id'"),
        (b'{"data": [5]}', {"Ngsiv2-AttrsFormat": "normalized"}, "no string 'id'"),
        (b'{"data": [{"id": "E"}]}', {"Ngsiv2-AttrsFormat": "values"}, "lists of values"),
        (b"[" * 5000 + b"]" * 5000, {}, "deeper than"),
        (b'{"data":' + b"[" * 150 + b"]" * 150 + b"}", {}, "deeper than"),
    ],
)
def test_malformed_notifications_are_rejected(
    body: bytes, headers: dict[str, str], reason: str
) -> None:
    with pytest.raises(Rejected, match=reason):
        normalize(Notification(body, headers), source=SOURCE)


def check_total(body: bytes, headers: dict[str, str]) -> None:
    """Normalises into serialisable events, or raises ``Rejected`` — nothing else."""
    try:
        found = normalize(Notification(body, headers), source=SOURCE)
    except Rejected as rejected:
        reason = rejected.reason
        found = []
        assert reason, "a rejection always says why"
    assert_match(found)
    for event in found:
        serialised = json.loads(event.to_json())
        assert serialised["partitionkey"] == event.subject or event.type == "beats.fiware.raw"


leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
values = st.recursive(
    leaf,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=12,
)
header_names = st.sampled_from(
    [
        "Ngsiv2-AttrsFormat",
        "ngsiv2-attrsformat",
        "Ngsild-Attribute-Format",
        "Content-Type",
        "Link",
        "Fiware-Service",
        "NGSILD-Tenant",
    ]
)
header_values = st.sampled_from(
    [
        "normalized",
        "keyValues",
        "values",
        "custom",
        "simplifiedNormalized",
        "simplifiedKeyValues",
        "Concise",
        "Simplified",
        "application/ld+json",
        "application/geo+json",
        '<x>; rel="http://www.w3.org/ns/json-ld#context"',
        "<",
        "",
    ]
)
attribute_names = st.sampled_from(
    ["id", "type", "temperature", "location", "@context", "metadata", "value", "object"]
)


@pytest.mark.fuzz
@settings(max_examples=fuzz_examples(300), deadline=None)
@given(
    body=st.dictionaries(
        st.sampled_from(
            ["data", "subscriptionId", "type", "id", "@context", "notifiedAt", "contextResponses"]
        ),
        values,
    ),
    entity=st.dictionaries(attribute_names, values),
    headers=st.dictionaries(header_names, header_values),
)
def test_random_notifications_normalise_or_are_rejected(
    body: dict[str, Any], entity: dict[str, Any], headers: dict[str, str]
) -> None:
    if entity:
        body["data"] = [entity]
    check_total(json.dumps(body).encode(), headers)


def _mutate(value: Any, path: list[int], replacement: Any) -> Any:
    """Replace the node reached by following ``path`` (indices modulo the children)."""
    if not path or not isinstance(value, dict | list) or not value:
        return replacement
    keys = list(value) if isinstance(value, dict) else list(range(len(value)))
    key = keys[path[0] % len(keys)]
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[key] = _mutate(value[key], path[1:], replacement)
    return copy


@pytest.mark.fuzz
@settings(
    max_examples=fuzz_examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    case=st.sampled_from([c for c in CASES if spec(c)["raw"] is None]),
    path=st.lists(st.integers(min_value=0, max_value=50), max_size=6),
    replacement=values,
    drop_headers=st.lists(header_names, max_size=3),
)
def test_mutated_golden_notifications_normalise_or_are_rejected(
    case: str, path: list[int], replacement: Any, drop_headers: list[str]
) -> None:
    given_spec = spec(case)
    headers = {
        k: v
        for k, v in given_spec["headers"].items()
        if k.lower() not in {h.lower() for h in drop_headers}
    }
    check_total(json.dumps(_mutate(given_spec["body"], path, replacement)).encode(), headers)


@pytest.mark.fuzz
@settings(max_examples=fuzz_examples(200), deadline=None)
@given(body=st.binary(max_size=64), headers=st.dictionaries(header_names, header_values))
def test_random_bytes_normalise_or_are_rejected(body: bytes, headers: dict[str, str]) -> None:
    check_total(body, headers)
