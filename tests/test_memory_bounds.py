"""Memory of a beat bounded in bytes, over a real uvicorn server: large events, stalled readers.

A stalled reader is a raw socket with a tiny receive buffer that stops reading (the attack: a
slow ``?last_event_id=0`` over a log of 1 MiB events used to cost 1.5 GiB per reader). Python's
own allocations are traced (``tracemalloc``: every bytes object, the server's transport buffers,
the pages read from SQLite), which measures the running service without the allocator's noise.
"""

from __future__ import annotations

import asyncio
import re
import socket
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from common.client import subscribe
from common.eventlog import EventLog, StoredEvent
from common.hub import Hub
from common.metrics import Metrics
from common.sse import chunks
from tests.support import eventually, make_beat, make_events, read_sse, run_beat, stalled_socket

MIB = 1 << 20


def read_all(sock: socket.socket) -> bytes:
    """Everything up to the end of the (chunked) response or of the connection."""
    raw = b""
    sock.settimeout(20)
    while not raw.endswith(b"\r\n0\r\n\r\n") and (chunk := sock.recv(1 << 20)):
        raw += chunk
    return raw


def sse_ids(raw: bytes) -> list[int]:
    return [int(n) for n in re.findall(rb"^id: (\d+)$", raw, flags=re.MULTILINE)]


async def sequences(url: str, *, count: int) -> list[int]:
    """The sequences of ``count`` events from ``url`` (from the start) read by the Python client,
    which resumes with ``Last-Event-ID`` if it is cut off (a 1 MiB bound can cut a reader that
    keeps up under load too)."""
    received: list[int] = []
    async with asyncio.timeout(60):
        async for item in subscribe(url, last_event_id=0):
            received.append(getattr(item, "sequence", -1))
            if len(received) >= count:
                break
    return received


async def settled_growth(start: int, *, ready: Callable[[], bool]) -> int:
    """Peak traced bytes above ``start`` once ``ready()`` and no growth for a second."""
    await eventually(ready, timeout=30, what="the stalled readers")
    last = -1
    for _ in range(60):
        _, peak = tracemalloc.get_traced_memory()
        if peak == last:
            break
        last = peak
        await asyncio.sleep(1.0)
    return last - start


async def test_a_stalled_reader_overflows_by_bytes_and_resumes_without_gap(
    tmp_path: Path,
) -> None:
    """The count bound (100,000) is never reached: 64 KiB events overflow the 1 MiB byte bound;
    the stalled reader is cut off with a retry hint, counted, and resumes from the log with no
    gap; a reading client gets every event (resuming too, should it fall 1 MiB behind)."""
    beat = make_beat(tmp_path, sse_queue_size=100_000, sse_queue_bytes=MIB, sse_page_bytes=MIB)
    total = 200
    async with run_beat(beat) as base:
        stalled = stalled_socket(beat.settings.port, "/events")
        await eventually(lambda: beat.hub.subscriber_count == 1, what="the stalled reader")
        fast = asyncio.create_task(sequences(f"{base}/events", count=total))
        for first in range(0, total, 4):
            await beat.pipeline.commit(make_events(4, start=first, pad=64 * 1024))
        await eventually(lambda: beat.metrics.sse_overflow._value.get() >= 1, what="overflow")
        raw = await asyncio.to_thread(read_all, stalled)
        stalled.close()
        received = sse_ids(raw)
        rest = await read_sse(
            f"{base}/events", count=total - len(received),
            headers={"Last-Event-ID": str(received[-1])},
        )  # fmt: skip
        assert await fast == list(range(1, total + 1))
    assert b": overflow, reconnect with Last-Event-ID to resume\nretry: 500" in raw
    assert received == list(range(1, len(received) + 1))
    assert len(received) < total // 2  # far fewer than the 16 MiB the reader was offered
    assert [int(m.id) for m in rest] == list(range(len(received) + 1, total + 1))


async def test_stalled_replays_of_large_events_hold_about_a_page_each(tmp_path: Path) -> None:
    """Six readers of ``?last_event_id=0`` over 40 events of 1 MiB stop reading: together they
    hold a few pages, not the log (each used to hold a 500-event page and its joined copy)."""
    readers, events = 6, 40
    beat = make_beat(tmp_path, sse_page_bytes=MIB, sse_send_timeout=120)
    async with run_beat(beat) as base:
        for first in range(0, events, 4):
            await beat.pipeline.commit(make_events(4, start=first, pad=MIB))
        tracemalloc.start()
        try:
            start, _ = tracemalloc.get_traced_memory()
            stalled = [
                stalled_socket(beat.settings.port, "/events?last_event_id=0")
                for _ in range(readers)
            ]
            growth = await settled_growth(start, ready=lambda: beat.hub.subscriber_count == readers)
        finally:
            tracemalloc.stop()
        assert beat.hub.subscriber_count == readers  # stalled, not dropped
        for sock in stalled:
            sock.close()
        # nothing was lost for a reader that does read
        replayed = await read_sse(f"{base}/events?last_event_id=0", count=events, timeout=30)
    print(f"6 stalled replays of 40 x 1 MiB: {growth / MIB:.1f} MiB traced")
    assert [int(m.id) for m in replayed] == list(range(1, events + 1))
    assert growth < readers * 6 * MIB, f"{growth / MIB:.1f} MiB for {readers} stalled readers"


async def test_log_pages_stop_at_the_byte_bound_but_never_come_back_empty(
    tmp_path: Path,
) -> None:
    async with EventLog(tmp_path / "log.db") as log:
        await log.append(make_events(10, pad=1000))
        sizes = [len(e.body) for e in await log.read(after=0)]
        page = await log.read(after=0, max_bytes=sizes[0] * 3)
        assert [e.seq for e in page] == [1, 2, 3]
        page = await log.read(after=0, max_bytes=sizes[0] * 3 + 1)
        assert [e.seq for e in page] == [1, 2, 3, 4]  # stops once the bound is passed
        assert [e.seq for e in await log.read(after=4, max_bytes=1)] == [5]
        assert len(await log.read(after=0, limit=2, max_bytes=10 * MIB)) == 2


async def test_hub_accounts_bytes_and_hands_out_bounded_batches() -> None:
    metrics = Metrics("test")
    hub = Hub(metrics=metrics, queue_size=1000, queue_bytes=10_000)
    stored = [_stored(seq, 3000) for seq in range(1, 5)]
    with hub.subscribe() as subscription:
        hub.publish(stored[:3])
        assert subscription.buffered_bytes == 9000
        batch = await subscription.next_batch(4000)
        assert [e.seq for e in batch or []] == [1, 2]
        assert subscription.buffered_bytes == 3000
        hub.publish(stored[3:])
        hub.publish([_stored(5, 4001)])  # 3000 + 3000 + 4001 > 10,000
        assert subscription.overflowed and subscription.buffered_bytes == 0
        assert await subscription.next_batch(4000) is None
    assert metrics.sse_overflow._value.get() == 1
    with hub.subscribe() as subscription:
        hub.publish([_stored(6, 50_000)])  # larger than the bound alone: still delivered
        assert not subscription.overflowed
        assert [e.seq for e in await subscription.next_batch(10) or []] == [6]


def test_chunks_stay_within_the_limit_unless_one_frame_is_larger() -> None:
    events = [_stored(seq, size) for seq, size in enumerate([100, 100, 100, 5000, 100], 1)]
    parts = list(chunks((e.sse_frame() for e in events), 300))
    assert b"".join(parts) == b"".join(e.sse_frame() for e in events)
    assert [sse_ids(part) for part in parts] == [[1, 2], [3], [4], [5]]
    assert all(len(part) <= 300 for part in parts if len(sse_ids(part)) > 1)


def _stored(seq: int, size: int) -> StoredEvent:
    return StoredEvent(seq, "c", "t", "k", b"x" * size)
