"""Filters: the CloudEvents Subscriptions API dialects as query parameters and JSON (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.filters import (
    MAX_CONDITIONS,
    MAX_FILTER_CHARS,
    All,
    FilterError,
    Match,
    Not,
    matches,
    parse_filter_json,
    parse_query,
)
from gateway.filters import Any as AnyOf

READING: dict[str, Any] = {
    "specversion": "1.0",
    "id": "e1",
    "type": "beats.hivemq.message",
    "source": "mqtt://broker:1883",
    "subject": "city/sensors/station-001",
    "beat": "hivemq",
    "sequence": 17,
    "mqttqos": 1,
    "data": {"type": "ERROR", "level": 3, "ok": True, "readings": [{"v": 1.5}], "none": None},
}


def q(query: str) -> list[tuple[str, str]]:
    return [tuple(part.split("=", 1)) for part in query.split("&")]  # type: ignore[misc]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("exact.type=beats.hivemq.message", True),
        ("exact.type=beats.hivemq", False),
        ("prefix.subject=city/", True),
        ("prefix.subject=town/", False),
        ("suffix.subject=/station-001", True),
        ("not.suffix.subject=/test", True),
        ("not.suffix.subject=-001", False),
        ("exact.sequence=17", True),  # numbers compare by their JSON text
        ("exact.mqttqos=1", True),
        ("exact.tlp=red", False),  # a missing attribute matches no condition
        ("not.exact.tlp=red", True),
        ("data.type=ERROR", True),
        ("data.type=error", False),  # case-sensitive
        ("data.level=3", True),
        ("data.ok=true", True),
        ("data.none=null", True),
        ("data.readings.0.v=1.5", True),
        ("data.readings.1.v=1.5", False),
        ("data.missing.deep=x", False),
        ("prefix.data.type=ERR", True),
        ("exact.type=beats.hivemq.message&prefix.subject=city/&not.suffix.subject=/test", True),
        ("exact.type=beats.hivemq.message&prefix.subject=town/", False),
        ("any.exact.beat=fiware&any.prefix.subject=city/", True),
        ("any.exact.beat=fiware&any.prefix.subject=town/", False),
        ("any.exact.beat=fiware&any.exact.beat=hivemq&data.type=ERROR", True),
    ],
)
def test_query_filters(query: str, expected: bool) -> None:
    assert matches(parse_query(q(query)), READING) is expected


def test_query_structure_and_reserved_params() -> None:
    parsed = parse_query(q("last_event_id=3&access_token=x&exact.type=a&any.exact.beat=b"))
    assert parsed == All((Match("exact", "type", "a"), AnyOf((Match("exact", "beat", "b"),))))
    assert parse_query(q("last_event_id=3")) is None
    assert matches(None, READING)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[{"exact": {"type": "beats.hivemq.message"}}]', True),
        ('{"exact": {"type": "beats.hivemq.message", "beat": "fiware"}}', False),
        ('[{"any": [{"exact": {"beat": "fiware"}}, {"suffix": {"subject": "-001"}}]}]', True),
        ('[{"all": [{"prefix": {"type": "beats."}}, {"not": {"exact": {"beat": "x"}}}]}]', True),
        ('[{"not": {"prefix": {"subject": "city/"}}}]', False),
        ('[{"exact": {"data.type": "ERROR"}}]', True),
    ],
)
def test_json_filters(text: str, expected: bool) -> None:
    assert matches(parse_filter_json(text), READING) is expected


def test_json_filter_combines_with_query_parameters() -> None:
    both = parse_query([("filter", '[{"exact": {"beat": "hivemq"}}]'), ("data.type", "OK")])
    assert both == All((Match("exact", "beat", "hivemq"), Match("exact", "data.type", "OK")))
    assert not matches(both, READING)
    assert parse_query([("not.exact.type", "x")]) == Not(Match("exact", "type", "x"))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ([("foo", "bar")], "unknown query parameter 'foo'"),
        ([("regex.type", "a.*")], "unknown query parameter 'regex.type'"),
        ([("exact.Type", "x")], "bad attribute 'Type'"),
        ([("exact.", "x")], "bad attribute ''"),
        ([("data..x", "1")], "empty segment"),
        ([("filter", "[{")], "not valid JSON"),
        ([("filter", "[]")], "empty all filter list"),
        ([("filter", '[{"regex": {"type": "x"}}]')], "unknown filter dialect 'regex'"),
        ([("filter", '[{"exact": {"type": 3}}]')], "must be a string"),
        ([("filter", '[{"exact": {}}]')], "non-empty object"),
        ([("filter", '[{"any": {"exact": {}}}]')], "any takes a list"),
        ([("filter", '[{"exact": {"a": "b"}, "prefix": {"a": "b"}}]')], "one key"),
        ([("filter", '{"not": ' * 20 + '{"exact": {"a": "b"}}' + "}" * 20)], "deeper than"),
    ],
)
def test_bad_filters_say_what_is_wrong(params: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(FilterError, match=message.replace(".", r"\.").replace("*", r"\*")):
        parse_query(params)


def test_filter_size_and_depth_are_bounded_before_decoding() -> None:
    for bomb in ("[" * 3000, "[" * 40 + "]" * 40, '{"not":' * 30 + "{}" + "}" * 30):
        with pytest.raises(FilterError, match="nested deeper"):
            parse_filter_json(bomb)
    with pytest.raises(FilterError, match="longer than"):
        parse_filter_json("[" + " " * MAX_FILTER_CHARS + "]")
    # brackets and escaped quotes inside strings are not nesting
    text = json.dumps([{"exact": {"subject": '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["\\'}}])
    assert matches(
        parse_filter_json(text), {"subject": '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["\\'}
    )
    with pytest.raises(FilterError, match="more than"):
        parse_query([("any.exact.type", str(n)) for n in range(MAX_CONDITIONS + 1)])
    with pytest.raises(FilterError, match="exceed"):
        parse_query([("exact.type", "x" * (MAX_FILTER_CHARS + 1))])
