"""Fuzzing the inputs of the SSE endpoints that the schema-driven fuzzing leaves out (their
valid requests open endless streams): the gateway's filters, the merged stream's position
vector and ``Last-Event-ID``. Each either parses or raises the ``ValueError`` the routes turn
into a 400; a parsed filter evaluates any event without raising."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.sse import parse_last_event_id
from gateway.filters import matches, parse_filter_json, parse_query
from gateway.positions import parse_position
from tests.support import fuzz_examples

pytestmark = pytest.mark.fuzz

FUZZ = settings(max_examples=fuzz_examples(300), deadline=None)
words = st.sampled_from(["exact", "prefix", "suffix", "not", "any", "all", "data", "type",
                         "subject", "beat", "tlp", "filter", "x", "", "0", "a.b"])  # fmt: skip
keys = st.lists(words, min_size=1, max_size=5).map(".".join) | st.text(max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(words, inner, max_size=3),
    max_leaves=12,
)
events = st.fixed_dictionaries(
    {"type": st.text(max_size=10), "subject": st.text(max_size=10)},
    optional={"data": json_values, "tlp": st.text(max_size=6), "beat": st.text(max_size=6)},
)


@FUZZ
@given(params=st.lists(st.tuples(keys, st.text(max_size=20)), max_size=5), event=events)
def test_query_filters_parse_or_are_refused_and_never_break_matching(
    params: list[tuple[str, str]], event: dict[str, Any]
) -> None:
    try:
        parsed = parse_query(params)
    except ValueError:
        return
    assert isinstance(matches(parsed, event), bool)


@FUZZ
@given(raw=json_values.map(json.dumps) | st.text(max_size=60), event=events)
def test_json_filters_parse_or_are_refused(raw: str, event: dict[str, Any]) -> None:
    try:
        parsed = parse_filter_json(raw)
    except ValueError:
        return
    assert isinstance(matches(parsed, event), bool)


@FUZZ
@given(raw=st.none() | st.text(max_size=40), labels=st.lists(words, max_size=3, unique=True))
def test_positions_and_last_event_ids_parse_or_are_refused(
    raw: str | None, labels: list[str]
) -> None:
    try:
        positions = parse_position(raw, labels)
    except ValueError:
        pass
    else:
        assert set(positions) == set(labels)
    try:
        resume = parse_last_event_id(raw, None)
    except ValueError:
        return
    assert resume is None or resume >= 0
