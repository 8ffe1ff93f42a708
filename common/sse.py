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

Memory: the replay reads the log in pages of at most ``page_bytes`` of event JSON (at least one
event), and every chunk handed to the server, replayed or live, holds at most ``page_bytes`` of
frames (one larger event goes alone). The server takes the next chunk only once the previous
one was written to the connection's buffer, so a stalled client holds about one page, one chunk
and its hub buffer (``--sse-queue-bytes``), whatever the size of the log.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator

from common.eventlog import EventLog, GapRange, StoredEvent
from common.hub import Hub
from common.metrics import Metrics

__all__ = ["GAP_EVENT", "PAGE_BYTES", "chunks", "event_stream", "gap_frame", "parse_last_event_id"]

GAP_EVENT = "beats.gap"
PAGE_BYTES = 1 << 20
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
    page_bytes: int = PAGE_BYTES,
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
            replay = _replay(log, channel, cursor, page_bytes, metrics)
            async for position, parts in replay:
                cursor = position
                while parts:
                    yield parts.pop(0)
        # ``parts.pop(0)`` binds no name: a stream waiting for live events keeps no old chunk
        while (batch := await subscription.next_batch(page_bytes)) is not None:
            cursor, parts = _render([e for e in batch if e.seq > cursor], cursor, page_bytes)
            del batch
            while parts:
                yield parts.pop(0)
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


def chunks(frames: Iterable[bytes], limit: int) -> Iterator[bytes]:
    """SSE ``frames`` joined into chunks of at most ``limit`` bytes (a larger frame is a chunk
    of its own)."""
    parts: list[bytes] = []
    size = 0
    for frame in frames:
        if parts and size + len(frame) > limit:
            yield b"".join(parts)
            parts, size = [], 0
        parts.append(frame)
        size += len(frame)
    if parts:
        yield b"".join(parts)


def _render(events: list[StoredEvent], cursor: int, limit: int) -> tuple[int, list[bytes]]:
    """The new cursor and the chunks of ``events``."""
    if not events:
        return cursor, []
    return events[-1].seq, list(chunks((event.sse_frame() for event in events), limit))


async def _replay(
    log: EventLog, channel: str | None, after: int, page_bytes: int, metrics: Metrics
) -> AsyncIterator[tuple[int, list[bytes]]]:
    """The log after ``after``, page by page: the page's last sequence and its chunks (with a
    gap signal before the first event past a lost range)."""
    while page := await log.read(after=after, limit=_PAGE, channel=channel, max_bytes=page_bytes):
        parts = list(chunks(_frames(page, after, log.ranges, metrics), page_bytes))
        after = page[-1].seq
        del page
        yield after, parts
