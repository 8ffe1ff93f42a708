"""The Ditto protocol normaliser: golden files, rejections, and Hypothesis on random frames.

Golden inputs named ``doc_*`` are Ditto's own documentation examples
(``documentation/src/main/resources/pages/ditto/protocol/**``); ``snapshot_*`` inputs are Thing
JSON read over HTTP and go through :func:`snapshot_event`. ``UPDATE_GOLDEN=1`` rewrites the
expected files (review the diff).
"""

from __future__ import annotations

import copy
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beats.ditto.normalize import MAX_DEPTH, WILDCARD_KEY, normalize, snapshot_event
from common.envelope import CloudEvent
from common.normalize import Rejected
from tests.asyncapi.validators import assert_match
from tests.support import fuzz_examples

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name.removesuffix(".input.json") for p in GOLDEN.glob("*.input.json"))
SOURCE = "http://ditto:8080"
OBSERVED = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)


def load(case: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GOLDEN / f"{case}.input.json").read_text())
    return data


def run(case: str) -> list[CloudEvent]:
    if case.startswith("snapshot_"):
        return [snapshot_event(load(case), source=SOURCE, observed_at=OBSERVED, session=3)]
    return normalize(load(case), source=SOURCE)


def one(case: str) -> CloudEvent:
    (event,) = run(case)
    return event


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    events = [json.loads(e.to_json()) for e in run(case)]
    expected_path = GOLDEN / f"{case}.expected.json"
    if os.environ.get("UPDATE_GOLDEN"):
        expected_path.write_text(json.dumps(events, indent=2, sort_keys=True) + "\n")
    assert events == json.loads(expected_path.read_text())


def test_twin_event_types_ids_and_paths() -> None:
    prop = one("modified_feature_property")
    assert (prop.type, prop.channel) == ("beats.ditto.twin.modified", "twin")
    assert (prop.subject, prop.partitionkey) == ("org.eclipse.ditto:fancy-car",) * 2
    assert prop.data["feature_id"] == "engine"
    assert prop.data["property_path"] == "status/temperature"
    assert prop.data["extra"] == {"attributes": {"location": "Munich"}}
    assert prop.id == "org.eclipse.ditto:fancy-car@7/modified/twin"
    assert prop.time == datetime(2026, 10, 1, 10, 1, tzinfo=UTC)
    desired = one("desired_property_modified")
    assert desired.data["desired_property_path"] == "target"
    assert desired.data["correlation_id"] == "d-1"  # headers are case-insensitive
    assert one("attribute_deleted").data["attribute_path"] == "nickname"
    assert one("migrated").type == "beats.ditto.twin.migrated"
    assert one("merged").type == "beats.ditto.twin.merged"
    assert "value" not in one("deleted").data  # absent, not null


@pytest.mark.parametrize("case", ["merged_null_is_deletion", "doc_merged_delete_feature_property"])
def test_merged_null_is_a_deletion(case: str) -> None:
    event = one(case)
    assert event.type == "beats.ditto.twin.deleted"
    assert event.data["merge_deletion"] is True
    assert event.data["value"] is None
    assert event.id.endswith("/merged/twin")  # the id still names Ditto's own action
    assert one("merged_scalar_value").type == "beats.ditto.twin.merged"


def test_live_messages_responses_and_commands() -> None:
    message = one("live_message_subject_with_slash")
    assert (message.type, message.channel) == ("beats.ditto.live.message", "live")
    assert (message.data["subject"], message.data["direction"]) == ("ask/question", "inbox")
    assert message.id.startswith("org.eclipse.ditto:fancy-car/beats.ditto.live.message/q-42/")
    outbox = one("live_message_feature_outbox")
    assert (outbox.data["direction"], outbox.data["feature_id"]) == ("outbox", "engine")
    binary = one("live_message_binary_no_correlation")
    assert binary.data["subject"] == "firmware/chunk"
    assert binary.data["direction"] == "outbox"
    assert binary.id == one("live_message_binary_no_correlation").id  # digest: deterministic
    assert "value" not in one("live_message_value_absent").data
    teapot = one("doc_message_response_418")
    assert (teapot.type, teapot.data["status"]) == ("beats.ditto.live.response", 418)
    assert one("live_response").id != message.id  # same correlation id, other type
    assert one("live_command").type == "beats.ditto.live.command"


def test_frames_sharing_a_correlation_id_keep_their_own_ids() -> None:
    """Ditto's ``basic-messages.md`` sends its questions and answers with one correlation-id;
    two different frames are two events, the same frame twice is one."""
    question = load("doc_message_received")
    other = {**question, "value": "Are you there?"}
    error = {
        "topic": question["topic"].replace("live/messages/ask", "twin/errors"),
        "headers": question["headers"],
        "path": "/",
        "value": {"status": 404, "error": "things:thing.notfound", "message": "not found"},
        "status": 404,
    }
    second_error = {**error, "value": {**error["value"], "message": "still not found"}}
    frames = [question, other, error, second_error]
    ids = [normalize(f, source=SOURCE)[0].id for f in frames]
    assert len(set(ids)) == 4
    assert all("/demo-6qaal9l/" in i for i in ids)
    assert normalize(copy.deepcopy(question), source=SOURCE)[0].id == ids[0]
    reordered = json.loads(json.dumps(question, sort_keys=True))
    assert normalize(reordered, source=SOURCE)[0].id == ids[0]


def test_time_falls_back_to_the_receive_time() -> None:
    frame = load("doc_message_received")
    assert "timestamp" not in frame and "timestamp" not in frame["headers"]
    (event,) = normalize(frame, source=SOURCE, received_at=OBSERVED)
    assert event.time == OBSERVED


def test_errors_are_their_own_type() -> None:
    error = one("error")
    assert (error.type, error.data["status"]) == ("beats.ditto.error", 404)
    failed = one("twin_command_response_error")  # status >= 400 outside errors/
    assert (failed.type, failed.subject) == ("beats.ditto.error", "org.eclipse.ditto:fancy-car")
    wildcard = one("doc_search_error_wildcard")  # _/_/things/search/errors: no channel
    assert (wildcard.type, wildcard.channel) == ("beats.ditto.error", "twin")
    assert (wildcard.subject, wildcard.partitionkey) == (None, WILDCARD_KEY)
    assert one("rql_invalid_error").subject == "unknown:unknown"  # Ditto's fallback id


@pytest.mark.parametrize("case", ["doc_search_next_ignored", "policy_announcement_ignored"])
def test_signals_that_are_not_republished(case: str) -> None:
    assert run(case) == []


def test_snapshot_event() -> None:
    thing = load("snapshot_thing")
    event = one("snapshot_thing")
    assert (event.type, event.channel, event.subject) == (
        "beats.ditto.twin.snapshot",
        "twin",
        "org.works.cars:car-1",
    )
    assert event.id == "org.works.cars:car-1@17/snapshot/3"
    assert event.data["thing"] == thing
    assert event.time == datetime(2026, 10, 1, 11, 0, 0, 250000, tzinfo=UTC)
    later = snapshot_event(thing, source=SOURCE, observed_at=datetime(2027, 1, 1, tzinfo=UTC))
    assert later.id != event.id  # without a session every reading is its own event
    bare = snapshot_event({"thingId": "a:b"}, source=SOURCE, observed_at=OBSERVED)
    assert (bare.data["revision"], bare.time) == (None, OBSERVED)


@pytest.mark.parametrize(
    "thing", [{"attributes": {}}, {"thingId": "no-colon"}, {"thingId": ":name"}, {"thingId": 7}]
)
def test_snapshot_of_a_thing_without_id_is_rejected(thing: dict[str, Any]) -> None:
    with pytest.raises(Rejected, match="thingId"):
        snapshot_event(thing, source=SOURCE)


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ([], "not a JSON object"),
        ({"path": "/"}, "no string 'topic'"),
        ({"topic": "ns/car/things/twin/events/created"}, "'path'"),
        ({"topic": "ns/car/things/twin/events/created", "path": "x"}, "'path'"),
        ({"topic": "ns/car/things/twin/events/created", "path": "/", "headers": []}, "headers"),
        ({"topic": "ns/car/things/twin/events/exploded", "path": "/"}, "unknown event action"),
        ({"topic": "nonsense", "path": "/"}, "namespace/name"),
        ({"topic": "ns//things/twin/events/created", "path": "/"}, "namespace/name"),
        ({"topic": "ns/car/gadgets/twin/events/created", "path": "/"}, "unknown group"),
        ({"topic": "ns/car/things/dead/events/created", "path": "/"}, "unknown channel"),
        ({"topic": "ns/car/things/twin/gossip", "path": "/"}, "criterion"),
        ({"topic": "ns/car/things/live/messages", "path": "/inbox/messages/"}, "subject"),
        ({"topic": "ns/car/things/twin/commands/modify", "path": "/"}, "unsupported"),
        ({"topic": "ns/car/things/twin/messages/hi", "path": "/inbox/messages/hi"}, "unsupported"),
        (
            {"topic": "ns/car/things/twin/events/created", "path": "/", "value": nested(70)},
            "deeper",
        ),
    ],
)
def test_malformed_messages_are_rejected(message: Any, reason: str) -> None:
    with pytest.raises(Rejected, match=reason):
        normalize(message, source=SOURCE)


def check(message: Any, events: list[CloudEvent]) -> None:
    """What every produced event must satisfy, whatever the input."""
    assert_match(events)
    for event in events:
        body = json.loads(event.to_json())
        assert body["type"].startswith("beats.ditto.")
        assert event.channel in ("twin", "live")
        assert body["partitionkey"] == body.get("subject", WILDCARD_KEY)
        assert body["data"]["topic"] == message["topic"]
    again = normalize(message, source=SOURCE)
    assert [e.id for e in again] == [e.id for e in events]  # ids do not depend on the moment


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)
segments = st.sampled_from(
    [
        "ns",
        "car",
        "_",
        "things",
        "policies",
        "twin",
        "live",
        "events",
        "messages",
        "commands",
        "errors",
        "search",
        "created",
        "merged",
        "deleted",
        "ask",
        "",
        "x/y",
    ]
)
topics = st.text(max_size=30) | st.builds("/".join, st.lists(segments, max_size=8))
paths = st.sampled_from(
    [
        "/",
        "/features/f/properties/p",
        "/inbox/messages/a/b",
        "/features/f/outbox/messages/s",
        "/attributes/a",
        "",
        "x",
        "/features",
    ]
) | st.text(max_size=12)


@pytest.mark.fuzz
@settings(max_examples=fuzz_examples(500), deadline=None)
@given(
    topic=topics,
    path=st.none() | paths,
    value=json_values,
    headers=st.none()
    | json_values
    | st.dictionaries(st.sampled_from(["correlation-id", "Content-Type", "x"]), json_values),
    revision=st.none() | json_values,
    status=st.none() | json_values,
    extra=st.none() | json_values,
)
def test_random_frames_normalise_or_are_rejected(
    topic: str, path: Any, value: Any, headers: Any, revision: Any, status: Any, extra: Any
) -> None:
    fields = {"topic": topic, "path": path, "value": value, "headers": headers}
    fields |= {"revision": revision, "status": status, "extra": extra}
    message = {k: v for k, v in fields.items() if v is not None or k == "value"}
    try:
        events = normalize(message, source=SOURCE)
    except Rejected:
        return
    check(message, events)


def mutate(frame: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    mutated = copy.deepcopy(frame)
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from([*sorted(mutated), "topic", "value", "status", "extra"]))
        choice = data.draw(st.integers(0, 3))
        if choice == 0:
            mutated.pop(key, None)
        elif choice == 1:
            mutated[key] = data.draw(json_values)
        elif choice == 2 and isinstance(mutated.get("topic"), str):
            parts = mutated["topic"].split("/")
            index = data.draw(st.integers(0, len(parts) - 1))
            parts[index] = data.draw(segments)
            mutated["topic"] = "/".join(parts)
        elif isinstance(mutated.get("headers"), dict):
            mutated["headers"][data.draw(st.text(max_size=15))] = data.draw(json_values)
    return mutated


NORMALISED = [c for c in CASES if not c.startswith("snapshot_")]


@pytest.mark.fuzz
@settings(
    max_examples=fuzz_examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(case=st.sampled_from(NORMALISED), data=st.data())
def test_mutated_golden_frames_never_raise_anything_but_rejected(
    case: str, data: st.DataObject
) -> None:
    message = mutate(load(case), data)
    try:
        events = normalize(message, source=SOURCE)
    except Rejected:
        return
    check(message, events)


@pytest.mark.fuzz
@settings(max_examples=fuzz_examples(200), deadline=None)
@given(
    thing=st.dictionaries(
        st.sampled_from(["thingId", "_revision", "_modified", "features"]), json_values
    )
)
def test_random_snapshots_never_raise_anything_but_rejected(thing: dict[str, Any]) -> None:
    try:
        event = snapshot_event(thing, source=SOURCE, observed_at=OBSERVED)
    except Rejected:
        return
    assert_match([event])
    assert json.loads(event.to_json())["subject"] == thing["thingId"]


def test_depth_limit_is_generous() -> None:
    frame = {"topic": "a/b/things/twin/events/created", "path": "/", "value": nested(MAX_DEPTH - 2)}
    assert len(normalize(frame, source=SOURCE)) == 1
