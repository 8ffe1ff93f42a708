"""The OpenCTI frame model: stream ids, start positions as OpenCTI reads them, wire encoding."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from httpx_sse import ServerSentEvent

from beats.opencti.frames import BEGINNING, Frame, StreamId, start_position, trimmed_past


def test_stream_ids_parse_print_and_order_as_redis_does() -> None:
    first = StreamId.parse("1700000000000-0")
    assert first == StreamId(1700000000000, 0) and str(first) == "1700000000000-0"
    assert StreamId.parse("1700000000000-2") > StreamId.parse("1700000000000-1") > first
    assert StreamId.parse("1700000000001-0") > StreamId.parse("1700000000000-99")
    assert StreamId(9, 0) < StreamId(10, 0)  # numeric, not lexicographic
    assert first > BEGINNING


@pytest.mark.parametrize("text", ["", "17", "a-b", "1-2-3", "-1-0", "1700000000000-0 x"])
def test_bad_stream_ids_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a stream id"):
        StreamId.parse(text)


def test_an_id_has_the_time_opencti_puts_in_heartbeats() -> None:
    assert StreamId(1685523857951, 0).iso() == "2023-05-31T09:04:17.951Z"
    when = datetime(2023, 5, 31, 9, 4, 17, 951000, tzinfo=UTC)
    assert StreamId.at(when, 3) == StreamId(1685523857951, 3)
    assert StreamId(1685523857951, 0).time() == when


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0", BEGINNING),
        ("0-0", BEGINNING),
        ("1620249512318-0", StreamId(1620249512318, 0)),
        ("2021-05-05T21:18:32.318Z", StreamId(1620249512318, 0)),
        ("2021-05-05T21:18:32.318", StreamId(1620249512318, 0)),
        ("yesterday", None),
    ],
)
def test_start_positions(value: str | None, expected: StreamId | None) -> None:
    assert start_position(value) == expected


def test_frames_encode_as_opencti_writes_them() -> None:
    assert (
        Frame("create", "5-0", '{"a":1}').encode() == b'id: 5-0\nevent: create\ndata: {"a":1}\n\n'
    )
    assert Frame("connected", "", "{}").encode() == b"event: connected\ndata: {}\n\n"
    with pytest.raises(ValueError, match="one line"):
        Frame("create", "5-0", "a\nb").encode()


def test_frames_from_httpx_sse() -> None:
    frame = Frame.from_sse(ServerSentEvent(event="heartbeat", data='"x"', id="7-1"))
    assert frame == Frame("heartbeat", "7-1", '"x"')
    assert frame.stream_id == StreamId(7, 1)
    assert Frame("connected", "", "{}").stream_id is None


def _connected(first: str) -> str:
    return f'{{"firstEventId": "{first}", "lastEventId": "1700000009000-0", "streamSize": 3}}'


@pytest.mark.parametrize(
    ("first", "resume", "expected"),
    [
        ("1700000005000-0", "1700000001000-0", StreamId(1700000005000, 0)),  # trimmed past us
        ("1700000005000-0", "1700000005000-0", None),  # our position is still there
        ("1700000001000-0", "1700000005000-0", None),
        ("1700000005000-0", None, None),  # no saved position: nothing to lose
        ("1700000005000-0", "0", None),  # from the beginning: whatever is there
        ("0-0", "1700000005000-0", None),  # an empty stream
    ],
)
def test_a_stream_trimmed_past_the_resume_position_is_detected(
    first: str, resume: str | None, expected: StreamId | None
) -> None:
    assert trimmed_past(_connected(first), resume) == expected


@pytest.mark.parametrize("data", ["", "not json", "[]", '{"firstEventId": 5}', "{}"])
def test_an_unreadable_connected_frame_is_not_a_trim(data: str) -> None:
    assert trimmed_past(data, "1700000005000-0") is None
