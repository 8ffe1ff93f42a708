"""The SSE stream of a beat: replay from the log, then live events from the hub, with no gap.

Replay contract (the same on every beat and on the gateway):

* no ``Last-Event-ID`` header and no ``last_event_id`` query: live events from now on;
* ``last_event_id=0``: everything the log still holds, then live;
* ``last_event_id=N``: every event with a sequence greater than N, then live.

The subscription to the hub is taken *before* the log is read, and live events whose sequence
was already sent are skipped, so the switch from replay to live has no gap and no duplicate.

When N is older than what retention kept, or newer than the log's head (the log was reset), the
stream says so first with a ``beats.gap`` event (no ``id:`` line, so the client's resume position
is not moved by it) and then resumes from the oldest event kept. When the log lost events (its
database or WAL was lost: :mod:`common.highwater`), a client whose N lies in the lost range, and a
replay that crosses it, get a ``beats.gap`` with reason ``lost``; a range given up after an
unclean stop with no evidence of loss (``skipped``) is crossed silently, unless N lies in it
(then the client holds events the log does not: they were lost).

Overflow: when the subscriber's buffer overflows (see :mod:`common.hub`), the stream ends with a
``retry:`` hint and a comment; the client's reconnect resumes from its ``Last-Event-ID``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

from common.eventlog import EventLog, GapRange, StoredEvent
from common.hub import Hub
from common.metrics import Metrics

__all__ = ["GAP_EVENT", "event_stream", "gap_frame", "parse_last_event_id"]

GAP_EVENT = "beats.gap"
_PAGE = 500


def parse_last_event_id(header: str | None, query: str | None) -> int | None:
    """The resume position from the header (preferred) or the query; ``ValueError`` if bad."""
    raw = header if header not in (None, "") else query
    if raw is None or raw == "":
        return None
    value = int(raw)
    if value < 0:
        raise ValueError("last event id must be >= 0")
    return value


def gap_frame(*, requested: int, resumed_after: int, reason: str) -> bytes:
    data = json.dumps(
        {"requested": requested, "resumed_after": resumed_after, "reason": reason},
        separators=(",", ":"),
    )
    return f"event: {GAP_EVENT}\ndata: {data}\n\n".encode()


async def event_stream(
    *,
    log: EventLog,
    hub: Hub,
    metrics: Metrics,
    channel: str | None,
    last_event_id: int | None,
    retry_ms: int = 2000,
) -> AsyncIterator[bytes]:
    with hub.subscribe(channel) as subscription:
        yield b"retry: %d\n\n" % retry_ms
        if last_event_id is None:
            cursor = log.head
        else:
            cursor, reason = _gap_check(log, last_event_id)
            if reason is not None:
                metrics.sse_gaps.inc()
                yield gap_frame(requested=last_event_id, resumed_after=cursor, reason=reason)
            async for page in _replay(log, channel, cursor):
                yield b"".join(_frames(page, cursor, log.ranges, metrics))
                cursor = page[-1].seq
        while (batch := await subscription.next_batch()) is not None:
            frames = [event.sse_frame() for event in batch if event.seq > cursor]
            if frames:
                cursor = batch[-1].seq
                yield b"".join(frames)
        if subscription.overflowed:
            yield b": overflow, reconnect with Last-Event-ID to resume\nretry: 500\n\n"


def _gap_check(log: EventLog, requested: int) -> tuple[int, str | None]:
    """Where to resume after ``requested``, and the reason of the gap signal if it is not
    ``requested`` itself."""
    if requested > log.head:
        return log.purged_through, "ahead-of-log"
    for gap in log.ranges:
        if gap.covers(requested) and requested < gap.high:
            return gap.high, "lost"
    if requested < log.purged_through:
        return log.purged_through, "expired"
    return requested, None


def _frames(
    page: list[StoredEvent], cursor: int, ranges: list[GapRange], metrics: Metrics
) -> Iterator[bytes]:
    """The page's frames, with a gap signal before the first event past a lost range."""
    for event in page:
        for gap in ranges:
            if gap.kind == "lost" and cursor <= gap.low and event.seq > gap.high:
                metrics.sse_gaps.inc()
                yield gap_frame(requested=gap.low, resumed_after=gap.high, reason="lost")
        cursor = event.seq
        yield event.sse_frame()


async def _replay(
    log: EventLog, channel: str | None, after: int
) -> AsyncIterator[list[StoredEvent]]:
    while page := await log.read(after=after, limit=_PAGE, channel=channel):
        after = page[-1].seq
        yield page
