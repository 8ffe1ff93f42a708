"""The Ditto Protocol model: topics, envelopes and text control frames."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beats.ditto.protocol import (
    COMMANDS,
    JWT_TOKEN,
    Control,
    ProtocolError,
    ack,
    control,
    header,
    jwt_token,
    parse_control,
    parse_envelope,
    parse_topic,
)
from tests.support import fuzz_examples


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        # DOC/protocol-specification-topic.md examples
        (
            "org.eclipse.ditto/fancy-car-1/things/twin/commands/create",
            ("twin", "commands", "create"),
        ),
        (
            "org.eclipse.ditto/fancy-car-0815/things/live/events/modified",
            ("live", "events", "modified"),
        ),
        ("org.eclipse.ditto/fancy-car-23/things/twin/search", ("twin", "search", "")),
        (
            "org.eclipse.ditto/fancy-car-42/things/live/messages/hello.world",
            ("live", "messages", "hello.world"),
        ),
        ("org.eclipse.ditto/fancy-policy-1/policies/commands/create", (None, "commands", "create")),
        (
            "org.eclipse.ditto/p/policies/announcements/subjectDeletion",
            (None, "announcements", "subjectDeletion"),
        ),
        # DOC/protocol-specification-things-messages.md: the subject may contain "/"
        (
            "org.eclipse.ditto/smartcoffee/things/live/messages/ask/question",
            ("live", "messages", "ask/question"),
        ),
        # DOC/protocol/examples/search: wildcards, and a search error without channel
        ("_/_/things/twin/search/next", ("twin", "search", "next")),
        ("_/_/things/search/errors", (None, "errors", "")),
    ],
)
def test_topics(topic: str, expected: tuple[str | None, str, str]) -> None:
    parsed = parse_topic(topic)
    assert (parsed.channel, parsed.criterion, parsed.rest) == expected
    assert str(parsed) == topic


def test_topic_ids() -> None:
    thing = parse_topic("org.eclipse.ditto/car/things/twin/events/created")
    assert (thing.thing_id, thing.entity_id, thing.wildcard) == ("org.eclipse.ditto:car",) * 2 + (
        False,
    )
    policy = parse_topic("ns/p/policies/commands/create")
    assert (policy.thing_id, policy.entity_id) == (None, "ns:p")
    wildcard = parse_topic("_/_/things/twin/search/next")
    assert (wildcard.wildcard, wildcard.thing_id) == (True, None)


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("", "namespace/name"),
        ("a/b/things", "namespace/name"),
        ("/b/things/twin/events/created", "namespace/name"),
        ("a/b/widgets/twin/events/created", "unknown group"),
        ("a/b/things/shadow/events/created", "unknown channel"),
        ("a/b/things/twin", "criterion"),
        ("a/b/things/twin/rumours/x", "criterion"),
        ("a/b/things/live/messages", "subject"),
    ],
)
def test_bad_topics(topic: str, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        parse_topic(topic)


def test_envelope_fields() -> None:
    envelope = parse_envelope(
        {
            "topic": "ns/car/things/twin/events/merged",
            "headers": {"Correlation-ID": "c-1"},
            "path": "/attributes/x",
            "value": None,
            "revision": 3,
            "timestamp": "2026-01-01T00:00:00Z",
            "extra": {"attributes": {}},
            "fields": "thingId",
            "status": True,  # wrong type: kept in raw, read as None
        }
    )
    assert envelope.has_value and envelope.value is None
    assert (envelope.revision, envelope.status, envelope.fields) == (3, None, "thingId")
    assert envelope.header("correlation-id") == "c-1"
    assert envelope.extra == {"attributes": {}}
    absent = parse_envelope({"topic": "ns/car/things/twin/events/deleted", "path": "/"})
    assert (absent.has_value, absent.headers, absent.revision) == (False, {}, None)
    with pytest.raises(ProtocolError, match="headers"):
        parse_envelope({"topic": "ns/car/things/twin/events/deleted", "path": "/", "headers": 1})


def test_header_lookup_is_case_insensitive() -> None:
    assert header({"Content-Type": "text/plain"}, "content-type") == "text/plain"
    assert header({"x": 1}, "content-type") is None


def test_control_frames_as_documented() -> None:
    # DOC/httpapi-protocol-bindings-websocket.md
    documented = control(
        "START-SEND-EVENTS", namespaces=["org.eclipse.ditto"], filter="gt(attributes/counter,42)"
    )
    assert documented == (
        "START-SEND-EVENTS?namespaces=org.eclipse.ditto&filter=gt%28attributes%2Fcounter%2C42%29"
    )
    assert (
        control("START-SEND-EVENTS", extra_fields="attributes/counter,features/ConnectionStatus")
        == "START-SEND-EVENTS?extraFields=attributes/counter,features/ConnectionStatus"
    )
    assert control("STOP-SEND-MESSAGES") == "STOP-SEND-MESSAGES"
    assert ack("START-SEND-EVENTS?namespaces=a") == "START-SEND-EVENTS:ACK"
    assert jwt_token("eyJ.a-b_c.sig") == "JWT-TOKEN?jwtToken=eyJ.a-b_c.sig"
    with pytest.raises(ValueError, match="START-/STOP-SEND"):
        control("START-SEND-EVERYTHING")


def test_control_frames_parsed_like_dittos_gateway() -> None:
    parsed = parse_control(
        "START-SEND-EVENTS?namespaces=a,b&filter=like(attributes%2Fm,%22ACME+%26+Sons*%22)"
        "&extraFields=attributes&correlation-id=c-1&unknown=1"
    )
    assert parsed == Control(
        "START-SEND-EVENTS",
        ("a", "b"),
        'like(attributes/m,"ACME & Sons*")',  # URLDecoder: "+" is a space
        "attributes",
        "c-1",
    )
    assert parsed is not None and (parsed.start, parsed.stream) == (True, "twin-events")
    stop = parse_control("STOP-SEND-LIVE-EVENTS")
    assert stop is not None and (stop.start, stop.stream) == (False, "live-events")
    jwt = parse_control("JWT-TOKEN?jwtToken=abc")
    assert jwt is not None and (jwt.jwt_token, jwt.stream) == ("abc", None)
    assert parse_control("START-SEND-EVENTS?filter") == Control("START-SEND-EVENTS")
    assert parse_control("HELLO") is None
    assert parse_control("start-send-events") is None  # case matters, as in Ditto


every_stream_command = st.sampled_from([c for c in COMMANDS if c != JWT_TOKEN])
text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30)


@pytest.mark.fuzz
@settings(max_examples=fuzz_examples(300), deadline=None)
@given(
    command=every_stream_command,
    namespaces=st.lists(text.filter(lambda n: "," not in n), max_size=3),
    filter=st.none() | text,
    extra=st.none() | text,
    correlation=st.none() | text,
)
def test_control_round_trip(
    command: str, namespaces: list[str], filter: str | None, extra: str | None, correlation: Any
) -> None:
    frame = control(
        command,
        namespaces=namespaces,
        filter=filter,
        extra_fields=extra,
        correlation_id=correlation,
    )
    assert parse_control(frame) == Control(command, tuple(namespaces), filter, extra, correlation)
    assert ack(frame) == f"{command}:ACK"
