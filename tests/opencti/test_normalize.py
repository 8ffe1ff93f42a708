"""The OpenCTI normaliser: golden files per event kind and rejection, the transformation's
details, and Hypothesis on random and mutated frames (nothing but ``Rejected`` escapes)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beats.opencti.frames import Frame
from beats.opencti.normalize import MAX_DEPTH, normalize
from beats.opencti.stix import NEUTRAL, STANDARD_TLP_IDS, marking_level, marking_refs, tlp_of_refs
from common.normalize import Rejected
from tests.asyncapi.validators import assert_match
from tests.support import fuzz_examples

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name.removesuffix(".input.json") for p in GOLDEN.glob("*.input.json"))
SOURCE = "http://opencti:4000/stream"


def frame(case: str) -> Frame:
    spec = json.loads((GOLDEN / f"{case}.input.json").read_text())
    return Frame(spec["kind"], spec["id"], spec["data"])


def outcome(case: str) -> Any:
    """The events as JSON, or ``{"rejected": reason}``."""
    try:
        return [json.loads(e.to_json()) for e in normalize(frame(case), source=SOURCE)]
    except Rejected as rejected:
        return {"rejected": rejected.reason}


def test_every_kind_has_a_golden_case() -> None:
    kinds = {frame(case).kind for case in CASES if not case.startswith("reject_")}
    assert kinds == {"create", "update", "delete", "merge"}
    assert sum(case.startswith("reject_") for case in CASES) >= 3


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    expected_path = GOLDEN / f"{case}.expected.json"
    if os.environ.get("UPDATE_GOLDEN"):
        expected_path.write_text(json.dumps(outcome(case), indent=2, sort_keys=True) + "\n")
    assert outcome(case) == json.loads(expected_path.read_text())


def test_update_previous_is_the_object_before_the_update() -> None:
    (event,) = normalize(frame("update_with_previous"), source=SOURCE)
    before = json.loads(frame("create_indicator").data)["data"]
    assert event.data["previous"] == before
    assert event.data["stix"]["description"] == "C2 of QakBot"
    assert event.data["patch"][0] == {"op": "add", "path": "/description", "value": "C2 of QakBot"}


def test_an_update_a_live_stream_shows_as_create_keeps_its_previous() -> None:
    (event,) = normalize(frame("update_seen_as_create"), source=SOURCE)
    assert event.type == "beats.opencti.create"
    assert event.data["recorded_kind"] == "update"
    assert event.data["previous"] == json.loads(frame("create_indicator").data)["data"]


def test_a_patch_that_does_not_apply_is_reported_not_fatal() -> None:
    (event,) = normalize(frame("update_patch_does_not_apply"), source=SOURCE)
    assert event.data["previous"] is None
    assert "does not apply" in event.data["previous_error"]


def test_lifted_fields_and_tlp() -> None:
    (indicator,) = normalize(frame("create_indicator"), source=SOURCE)
    lifted = indicator.data["opencti"]
    assert lifted["score"] == 75 and lifted["detection"] is True
    assert lifted["entity_type"] == "Indicator" and lifted["id"]
    assert lifted["creator_ids"] == ["88ec0c6a-13ce-5e39-b486-354fe4a7084f"]
    assert indicator.model_extra == {"stixtype": "indicator", "tlp": "amber"}
    assert indicator.data["origin_user_id"] == "88ec0c6a-13ce-5e39-b486-354fe4a7084f"
    (relation,) = normalize(frame("relationship_tlp2_red"), source=SOURCE)
    assert relation.data["opencti"]["source_type"] == "Indicator"
    assert relation.data["opencti"]["target_type"] == "Malware"
    assert relation.model_extra is not None and relation.model_extra["tlp"] == "red"
    (observable,) = normalize(frame("observable_unmarked"), source=SOURCE)
    assert observable.model_extra is not None and observable.model_extra["tlp"] == "clear"
    # OpenCTI's fixture marks its report with AMBER+STRICT and a marking of its own
    (report,) = normalize(frame("report_with_marking"), source=SOURCE)
    assert report.model_extra is not None and report.model_extra["tlp"] == "red"  # unknown
    own = {"marking-definition--907bb632-e3c2-52fa-b484-cf166a7d377c": NEUTRAL}
    (report,) = normalize(frame("report_with_marking"), source=SOURCE, markings=own)
    assert report.model_extra is not None and report.model_extra["tlp"] == "amber+strict"


def test_ids_are_stream_id_kind_and_stix_id_not_the_unstable_event_id() -> None:
    (report,) = normalize(frame("report_with_marking"), source=SOURCE)
    stix_id = "report--f3e554eb-60f5-587c-9191-4f25e9ba9f32"
    assert report.id == f"1698942016700-0/create/{stix_id}"
    assert report.data["event_id"] == "1698942016653-0"
    assert report.subject == report.partitionkey == stix_id
    # the dependency sent under the same stream id is a different event
    (dependency,) = normalize(frame("dependency_marking"), source=SOURCE)
    assert dependency.id != report.id and dependency.data["stream_id"] == "1698942016700-0"
    assert dependency.data["origin_referer"] == "dependencies"
    again = normalize(frame("report_with_marking"), source=SOURCE)[0]
    assert again.id == report.id


def test_a_frame_without_stream_id_gets_a_content_id() -> None:
    spec = frame("create_indicator")
    first = normalize(Frame(spec.kind, "", spec.data), source=SOURCE)[0]
    second = normalize(Frame(spec.kind, "", spec.data), source=SOURCE)[0]
    assert first.id == second.id and first.id.startswith("sha256:")


def test_channels_by_stix_kind_and_overrides() -> None:
    channels = {
        case: normalize(frame(case), source=SOURCE)[0].channel
        for case in (
            "create_indicator",
            "merge",
            "relationship_tlp2_red",
            "observable_unmarked",
            "report_with_marking",
        )
    }
    assert channels == {
        "create_indicator": "indicators",
        "merge": "entities",
        "relationship_tlp2_red": "relationships",
        "observable_unmarked": "observables",
        "report_with_marking": "reports",
    }
    (event,) = normalize(frame("merge"), source=SOURCE, channels={"malware": "malware"})
    assert event.channel == "malware"


def test_tlp_markings_of_both_versions_and_from_the_stream() -> None:
    assert set(STANDARD_TLP_IDS.values()) == {"clear", "green", "amber", "amber+strict", "red"}
    assert sum(level == "clear" for level in STANDARD_TLP_IDS.values()) == 2
    (dependency,) = normalize(frame("dependency_marking"), source=SOURCE)
    assert marking_level(dependency.data["stix"]) == "amber"
    custom = {
        "type": "marking-definition",
        "id": "marking-definition--custom-1",
        "definition_type": "TLP",
        "name": "TLP:AMBER+STRICT",
    }
    assert marking_level(custom) == "amber+strict"
    assert marking_level({"type": "marking-definition", "definition": {"tlp": "white"}}) == "clear"
    # OpenCTI's GraphQL nodes: standard_id, definition_type, definition
    node = {"standard_id": "m--x", "definition_type": "TLP", "definition": "TLP:GREEN"}
    assert marking_level(node) == "green"
    assert marking_level({"definition_type": "PAP", "definition": "PAP:RED"}) == NEUTRAL
    assert marking_level({"definition_type": "statement", "definition": "(c) ACME"}) == NEUTRAL
    # a custom kind, or a TLP name under another kind, restricts: red
    assert marking_level({"definition_type": "CONFIDENTIAL", "definition": "ACME only"}) == "red"
    assert marking_level({"definition_type": "ORG", "definition": "TLP:GREEN"}) == "red"
    assert marking_level({"type": "marking-definition", "name": "TLP:PINK"}) == "red"
    known = {"marking-definition--custom-1": "amber+strict", "marking-definition--pap": NEUTRAL}
    assert tlp_of_refs(["marking-definition--custom-1"], known) == "amber+strict"
    assert tlp_of_refs(["marking-definition--unknown"], {}) == "red"
    assert tlp_of_refs(["x"], {"x": "not-a-level"}) == "red"
    assert tlp_of_refs([], {}) == "clear"
    assert tlp_of_refs(["marking-definition--pap"], known) == "clear"
    green = "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da"
    # a standard id keeps its level whatever the stream claimed for it
    assert tlp_of_refs([green], {green: "red"}) == "green"


def test_marking_refs_are_found_everywhere_an_event_carries_them() -> None:
    event = {
        "data": {"object_marking_refs": ["a"], "granular_markings": [{"marking_ref": "b"}]},
        "context": {
            "sources": [{"object_marking_refs": ["c"]}],
            "deletions": [{"extensions": {"x": {"source_object_marking_refs": ["d"]}}}],
            "reverse_patch": [
                {"op": "add", "path": "/object_marking_refs/1", "value": "e"},
                {"op": "replace", "path": "/object_marking_refs", "value": ["f"]},
                {"op": "add", "path": "/description", "value": "g"},
            ],
            "related_restrictions": {"markings": ["h"]},
        },
    }
    assert marking_refs(event) == {"a", "b", "c", "d", "e", "f", "h"}
    deep: object = {"object_marking_refs": ["z"]}
    for _ in range(5000):
        deep = [deep]
    assert marking_refs(deep) == {"z"}


@pytest.mark.parametrize("kind", ["connected", "heartbeat", "sync"])
def test_control_frames_make_no_events(kind: str) -> None:
    assert normalize(Frame(kind, "1-0", '"2026-01-01T00:00:00Z"'), source=SOURCE) == []


@pytest.mark.parametrize(
    ("kind", "data", "reason"),
    [
        ("create", "{not json", "not JSON"),
        ("create", "[1, 2]", "not a JSON object"),
        ("create", '{"data": "x"}', "no STIX object"),
        ("update", '{"data": {"id": 1, "type": "indicator"}}', "no string 'id'"),
        ("update", '{"data": {"id": "", "type": "indicator"}}', "no string 'id'"),
        ("delete", '{"data": {"id": "x--1"}}', "no string 'type'"),
        ("explode", '{"data": {}}', "unknown stream event kind"),
        ("create", "[" * 100_000, "deeper"),
        ("create", '{"data": ' + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "}", "deeper"),
    ],
)
def test_malformed_frames_are_rejected_with_a_reason(kind: str, data: str, reason: str) -> None:
    with pytest.raises(Rejected, match=reason):
        normalize(Frame(kind, "1-0", data), source=SOURCE)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _check(frame: Frame) -> None:
    """Normalise; anything but ``Rejected`` fails the test; events must serialise."""
    try:
        events = normalize(frame, source=SOURCE)
    except Rejected:
        return
    assert_match(events)
    for event in events:
        assert json.loads(event.to_json())["subject"] == event.partitionkey


@pytest.mark.fuzz
@settings(max_examples=fuzz_examples(300), deadline=None)
@given(
    kind=st.sampled_from(["create", "update", "delete", "merge", "bogus", "heartbeat"]),
    stream_id=st.sampled_from(["5-0", "", "999999999999999-1", "x"]),
    payload=st.dictionaries(
        st.sampled_from(["data", "context", "origin", "event_id", "message", "type"]), json_values
    ),
    stix=st.dictionaries(
        st.sampled_from(["id", "type", "object_marking_refs", "extensions", "modified"]),
        json_values,
    ),
)
def test_random_frames_normalise_or_are_rejected(
    kind: str, stream_id: str, payload: dict[str, Any], stix: dict[str, Any]
) -> None:
    if stix:
        payload["data"] = stix
    _check(Frame(kind, stream_id, json.dumps(payload)))


def _mutate(value: Any, draw: Any) -> Any:
    """Replace one randomly chosen node of a JSON document by a random JSON value."""
    if isinstance(value, dict) and value and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(value)))
        return {**value, key: _mutate(value[key], draw)}
    if isinstance(value, list) and value and draw(st.booleans()):
        index = draw(st.integers(0, len(value) - 1))
        return [*value[:index], _mutate(value[index], draw), *value[index + 1 :]]
    return draw(json_values)


@pytest.mark.fuzz
@settings(max_examples=fuzz_examples(300), deadline=None)
@given(case=st.sampled_from(CASES), data=st.data())
def test_mutated_golden_frames_normalise_or_are_rejected(case: str, data: st.DataObject) -> None:
    original = frame(case)
    try:
        document = json.loads(original.data)
    except ValueError:
        document = original.data
    mutated = _mutate(document, data.draw)
    _check(Frame(original.kind, original.id, json.dumps(mutated)))


@pytest.mark.fuzz
@settings(max_examples=fuzz_examples(200), deadline=None)
@given(case=st.sampled_from(CASES), cut=st.integers(0, 10_000), junk=st.text(max_size=5))
def test_truncated_frames_are_rejected_or_normalised(case: str, cut: int, junk: str) -> None:
    original = frame(case)
    _check(Frame(original.kind, original.id, original.data[:cut] + junk))


def test_time_falls_back_to_when_the_frame_was_read() -> None:
    read = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    data = json.dumps({"data": {"id": "indicator--t", "type": "indicator"}})
    (event,) = normalize(Frame("create", "", data), source=SOURCE, received_at=read)
    assert event.time == read
