"""The SSE stream of a beat: replay from the log, then live events from the hub, with no gap.

Replay contract (the same on every beat and on the gateway):

* no ``Last-Event-ID`` header and no ``last_event_id`` query: live events from now on;
* ``last_event_id=0``: everything the log still holds, then live;
* ``last_event_id=N``: every event with a sequence greater than N, then live.

The subscription to the hub is taken *before* the log is read, and live events whose sequence
was already sent are skipped, so the switch from replay to live has no gap and no duplicate.

When N is older than what retention kept, or newer than the log's head (the log was reset), the
stream says so first with a ``beats.gap`` event (no ``id:`` line, so the client's resume position
is not moved by it) and then resumes from the oldest event kept.

Overflow: when the subscriber's buffer overflows (see :mod:`common.hub`), the stream ends with a
``retry:`` hint and a comment; the client's reconnect resumes from its ``Last-Event-ID``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from common.eventlog import EventLog, StoredEvent
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
            cursor = await _gap_check(log, metrics, last_event_id)
            if cursor != last_event_id:
                yield gap_frame(
                    requested=last_event_id,
                    resumed_after=cursor,
                    reason="expired" if last_event_id < cursor else "ahead-of-log",
                )
            async for page in _replay(log, channel, cursor):
                cursor = page[-1].seq
                yield b"".join(event.sse_frame() for event in page)
        while (batch := await subscription.next_batch()) is not None:
            frames = [event.sse_frame() for event in batch if event.seq > cursor]
            if frames:
                cursor = batch[-1].seq
                yield b"".join(frames)
        if subscription.overflowed:
            yield b": overflow, reconnect with Last-Event-ID to resume\nretry: 500\n\n"


async def _gap_check(log: EventLog, metrics: Metrics, requested: int) -> int:
    """Where to resume after ``requested``: itself, or the position a gap signal announces."""
    if requested > log.head:
        metrics.sse_gaps.inc()
        return log.purged_through
    if requested < log.purged_through:
        metrics.sse_gaps.inc()
        return log.purged_through
    return requested


async def _replay(
    log: EventLog, channel: str | None, after: int
) -> AsyncIterator[list[StoredEvent]]:
    while page := await log.read(after=after, limit=_PAGE, channel=channel):
        after = page[-1].seq
        yield page
