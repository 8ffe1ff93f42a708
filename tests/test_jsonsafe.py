"""Strict, bounded JSON decoding (common.jsonsafe) and what the envelope makes of JSON that
cannot be carried (common.envelope.payload_to_data)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.envelope import new_event, payload_to_data
from common.jsonsafe import MAX_DEPTH, NotJson, Unrepresentable, loads, too_deep
from common.normalize import Rejected
from tests.support import fuzz_examples


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b'{"a": [1, 2.5, "x", null, true]}', {"a": [1, 2.5, "x", None, True]}),
        (b'"\\ud83d\\ude00"', "\U0001f600"),  # a surrogate *pair* is one character
        (b'"\\u0000 and \\u2028"', "\x00 and \u2028"),  # NUL and separators are JSON
        (b"9" * 4000, int("9" * 4000)),  # integers stay exact up to 4,000 digits
        (b"1e308", 1e308),
        (b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, json.loads(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)),
    ],
)
def test_json_that_can_be_carried_is_decoded(raw: bytes, value: Any) -> None:
    assert loads(raw) == value


@pytest.mark.parametrize(
    ("raw", "error", "reason"),
    [
        (b'"\\ud800"', Unrepresentable, "lone UTF-16 surrogate"),
        (b'{"k\\udc00": 1}', Unrepresentable, "lone UTF-16 surrogate"),
        (b"1e400", Unrepresentable, "beyond the range of a double"),
        (b"-1e400", Unrepresentable, "beyond the range of a double"),
        (b"9" * 4001, Unrepresentable, "4001 digits"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), Unrepresentable, "deeper than 64"),
        (b"[" * 100_000, Unrepresentable, "deeper than 64"),
        (b'{"a": 1, "a": 2}', Unrepresentable, "'a' appears twice"),
        (b'[{"x": {"k": 1, "k": 1}}]', Unrepresentable, "'k' appears twice"),
        (b"NaN", NotJson, "NaN is not JSON"),
        (b"[Infinity]", NotJson, "Infinity is not JSON"),
        (b"-Infinity", NotJson, "Infinity is not JSON"),
        (b"\xed\xa0\x80", NotJson, "not UTF-8"),  # a surrogate encoded as UTF-8 bytes
        (b"\xff", NotJson, "not UTF-8"),
        (b"", NotJson, "not JSON"),
        (b'{"a": ', NotJson, "not JSON"),
    ],
)
def test_json_that_cannot_be_carried_is_rejected_with_the_reason(
    raw: bytes, error: type[Rejected], reason: str
) -> None:
    with pytest.raises(error, match=reason):
        loads(raw, what="payload")


def test_depth_is_counted_iteratively() -> None:
    deep: Any = []
    for _ in range(10_000):
        deep = [deep]
    assert too_deep(deep)
    assert not too_deep([[[]]], 3)
    assert too_deep([[[[]]]], 3)


def test_unrepresentable_payloads_are_kept_byte_for_byte_with_a_note() -> None:
    raw = b'{"name": "\\ud800", "n": 1}'
    fields = payload_to_data(raw)
    assert base64.b64decode(fields["data_base64"]) == raw
    assert fields["datacontenttype"] == "application/json"
    assert "lone UTF-16 surrogate" in fields["datanote"]
    event = new_event(beat="b", type="t", source="s", channel="c", partitionkey="k", **fields)
    assert json.loads(event.to_json())["datanote"] == fields["datanote"]


def test_text_that_is_not_json_stays_text_and_declared_json_must_parse() -> None:
    assert payload_to_data(b"NaN")["data"] == "NaN"
    assert payload_to_data(b"\x00\x01")["data"] == "\x00\x01"
    with pytest.raises(Rejected, match="not valid JSON"):
        payload_to_data(b"", "application/json", require_json=True)


json_text = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
).map(lambda value: json.dumps(value, ensure_ascii=True))


@pytest.mark.fuzz
@settings(max_examples=fuzz_examples(300), deadline=None)
@given(text=json_text | st.text() | st.binary().map(lambda b: b.decode("latin-1")))
def test_whatever_loads_returns_can_be_encoded_again(text: str) -> None:
    """Every value loads() accepts survives encoding as UTF-8 JSON, unchanged; everything else
    is Rejected (and nothing else is raised)."""
    try:
        value = loads(text)
    except Rejected:
        return
    encoded = json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    assert json.loads(encoded) == value
