"""The SSE contract of every beat, over a real uvicorn server."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from common.sse import GAP_EVENT
from tests.support import (
    eventually,
    make_beat,
    make_events,
    read_sse,
    run_beat,
    stalled_socket,
)


async def test_replay_from_zero_then_live_without_gap_or_duplicate(tmp_path: Path) -> None:
    beat = make_beat(tmp_path)
    async with run_beat(beat) as base:
        await beat.pipeline.commit(make_events(5))
        reader = asyncio.create_task(read_sse(f"{base}/events?last_event_id=0", count=10))
        await eventually(lambda: beat.hub.subscriber_count == 1, what="subscriber")
        await beat.pipeline.commit(make_events(5, start=5))
        messages = await reader
    assert [m.id for m in messages] == [str(i) for i in range(1, 11)]
    assert [m.json()["data"]["n"] for m in messages] == list(range(10))
    first = messages[0]
    assert first.event == "beats.test.thing"
    assert first.json()["sequence"] == 1
    assert first.json()["specversion"] == "1.0"


async def test_resume_after_id_by_header_and_by_query(tmp_path: Path) -> None:
    beat = make_beat(tmp_path)
    async with run_beat(beat) as base:
        await beat.pipeline.commit(make_events(10))
        by_header = await read_sse(f"{base}/events", count=3, headers={"Last-Event-ID": "7"})
        by_query = await read_sse(f"{base}/events?last_event_id=7", count=3)
    assert [m.id for m in by_header] == ["8", "9", "10"]
    assert [m.id for m in by_query] == ["8", "9", "10"]


async def test_no_resume_position_means_live_only(tmp_path: Path) -> None:
    beat = make_beat(tmp_path)
    async with run_beat(beat) as base:
        await beat.pipeline.commit(make_events(3))
        reader = asyncio.create_task(read_sse(f"{base}/events", count=2))
        await eventually(lambda: beat.hub.subscriber_count == 1, what="subscriber")
        await beat.pipeline.commit(make_events(2, start=3))
        messages = await reader
    assert [m.id for m in messages] == ["4", "5"]


async def test_channel_stream_only_carries_its_channel(tmp_path: Path) -> None:
    beat = make_beat(tmp_path)
    async with run_beat(beat) as base:
        await beat.pipeline.commit(make_events(2, channel="a") + make_events(2, channel="b"))
        messages = await read_sse(f"{base}/events/b?last_event_id=0", count=2)
    assert [m.id for m in messages] == ["3", "4"]


async def test_expired_id_is_signalled_before_resuming(tmp_path: Path) -> None:
    beat = make_beat(tmp_path, retention_count=3)
    async with run_beat(beat) as base:
        for i in range(10):
            beat.log.db.last_retention = 0
            await beat.pipeline.commit(make_events(1, start=i))
        messages = await read_sse(f"{base}/events?last_event_id=2", count=4)
        metrics = (await httpx.AsyncClient().get(f"{base}/metrics")).text
    gap, *rest = messages
    assert gap.event == GAP_EVENT
    assert gap.id == ""
    assert gap.json() == {"requested": 2, "resumed_after": 7, "reason": "expired"}
    assert [m.id for m in rest] == ["8", "9", "10"]
    assert "beats_sse_gap_signals_total 1.0" in metrics


async def test_id_ahead_of_the_log_is_signalled_and_replays_everything(tmp_path: Path) -> None:
    beat = make_beat(tmp_path)
    async with run_beat(beat) as base:
        await beat.pipeline.commit(make_events(2))
        messages = await read_sse(f"{base}/events?last_event_id=500", count=3)
    assert messages[0].event == GAP_EVENT
    assert messages[0].json()["reason"] == "ahead-of-log"
    assert [m.id for m in messages[1:]] == ["1", "2"]


async def test_bad_last_event_id_is_a_clear_400(tmp_path: Path) -> None:
    beat = make_beat(tmp_path)
    async with run_beat(beat) as base, httpx.AsyncClient() as client:
        response = await client.get(f"{base}/events?last_event_id=abc")
        assert response.status_code == 400
        assert "Last-Event-ID" in response.json()["detail"]
        assert (await client.get(f"{base}/healthz")).status_code == 200


async def test_headers_heartbeat_and_retry_hint(tmp_path: Path) -> None:
    beat = make_beat(tmp_path, sse_heartbeat=0.2)
    async with (
        run_beat(beat) as base,
        httpx.AsyncClient(timeout=5) as client,
        client.stream("GET", f"{base}/events") as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        received = b""
        async for chunk in response.aiter_bytes():
            received += chunk
            if received.count(b": ping") >= 2:
                break
    assert received.startswith(b"retry: 2000")


async def test_slow_subscriber_is_disconnected_and_resumes_without_gap(tmp_path: Path) -> None:
    """A subscriber that stops reading overflows its queue, gets a retry hint and is cut off;
    a fast subscriber meanwhile gets everything promptly; the slow one resumes with no gap."""
    beat = make_beat(tmp_path, sse_queue_size=200)
    total = 4000  # x 4 KiB: more than the loopback socket buffers hold for a stalled reader
    async with run_beat(beat) as base:
        slow = httpx.AsyncClient(timeout=30)
        stream = slow.stream("GET", f"{base}/events?last_event_id=0")
        response = await stream.__aenter__()
        fast = asyncio.create_task(read_sse(f"{base}/events?last_event_id=0", count=total))
        await eventually(lambda: beat.hub.subscriber_count == 2, what="two subscribers")
        started = time.monotonic()
        for i in range(0, total, 20):
            await beat.pipeline.commit(make_events(20, start=i, pad=4096))
        fast_messages = await fast
        fast_elapsed = time.monotonic() - started
        await eventually(lambda: beat.metrics.sse_overflow._value.get() >= 1, what="overflow")
        body = b""
        async for chunk in response.aiter_bytes():  # the slow client now reads what it got
            body += chunk
        await stream.__aexit__(None, None, None)
        await slow.aclose()
        assert b"retry: 500" in body
        ids = [int(line[4:]) for line in body.split(b"\n") if line.startswith(b"id: ")]
        last_id = max(ids, default=0)
        assert 0 < last_id < total  # it got part of the stream, then was cut off
        rest = await read_sse(f"{base}/events?last_event_id={last_id}", count=total - last_id)
    assert [m.id for m in fast_messages] == [str(i) for i in range(1, total + 1)]
    assert fast_elapsed < 20
    assert [int(m.id) for m in rest] == list(range(last_id + 1, total + 1))
    data = [json.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: ")]
    assert [d["data"]["n"] for d in data] == list(range(last_id))


async def test_disconnected_clients_are_cleaned_up(tmp_path: Path) -> None:
    beat = make_beat(tmp_path)
    async with run_beat(beat) as base:
        readers = [asyncio.create_task(read_sse(f"{base}/events", count=1000)) for _ in range(5)]
        await eventually(lambda: beat.hub.subscriber_count == 5, what="five subscribers")
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await eventually(lambda: beat.hub.subscriber_count == 0, what="all cleaned up")
        assert beat.metrics.sse_subscribers._value.get() == 0


async def test_a_client_that_stops_taking_writes_is_dropped_logged_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """A reader that never reads fills its socket buffers; after ``--sse-send-timeout`` the
    write is given up: one warning, one count, no traceback, and the beat serves on."""
    beat = make_beat(tmp_path, sse_send_timeout=0.5, sse_page_bytes=1 << 20)
    async with run_beat(beat) as base:
        await beat.pipeline.commit(make_events(16, pad=1 << 20))
        sock = stalled_socket(beat.settings.port, "/events?last_event_id=0")
        try:
            await eventually(
                lambda: beat.metrics.sse_send_timeouts._value.get() == 1,
                what="the stalled write given up",
            )
            await eventually(lambda: beat.hub.subscriber_count == 0, what="the client gone")
        finally:
            sock.close()
        replayed = await read_sse(f"{base}/events?last_event_id=0", count=16, timeout=30)
    assert [int(m.id) for m in replayed] == list(range(1, 17))
    # uvicorn's loggers propagate to the root logger (caplog); stderr catches anything printed
    server_log = capfd.readouterr().err + caplog.text
    assert "Exception in ASGI application" not in server_log
    assert "without completing response" not in server_log
    assert "Traceback" not in server_log
    assert "did not take a write for 0.5 s" in caplog.text
