"""The SSE source's two read paths without Spark, against a real kernel beat: the driver-side
follower (bounded buffer, reconnect across an overflow disconnect and a beat restart) and the
stateless range replay (exact ranges, ``beats.gap`` raised or skipped as configured)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from common.service import Beat
from spark_receiver._http import GapError
from spark_receiver.events import COLUMNS
from spark_receiver.source import Follower, read_range
from tests.support import eventually, make_beat, make_events, run_beat, serve_app

SEQ = COLUMNS.index("sequence")


async def test_follower_resumes_across_overflow_and_beat_restart(tmp_path: Path) -> None:
    beat = make_beat(tmp_path, sse_queue_size=10)
    got: list[int] = []

    def drain(follower: Follower) -> bool:
        batch = follower.take(got[-1] if got else 0, 25)
        got.extend(seq for seq, _ in batch)
        if batch:
            follower.trim(batch[-1][0])
        return len(got) >= 300

    async with run_beat(beat) as base:
        options = {"url": f"{base}/events/c", "maxbuffered": "20", "timeout": "5"}
        follower = Follower(options, after=0)
        await beat.pipeline.commit(make_events(200))  # far beyond the beat's buffer of 10
        await eventually(lambda: drain(follower) or len(got) >= 150, timeout=20)
    beat = Beat(name=beat.name, settings=beat.settings, source=type(beat.source)())
    async with run_beat(beat):
        await beat.pipeline.commit(make_events(100, start=200))
        await eventually(lambda: drain(follower), timeout=30, what="300 events")
    follower.stop()
    assert got == list(range(1, 301))
    assert len(follower.take(0, 1000)) <= 20


async def test_read_range_is_exact_and_gaps_are_not_silent(tmp_path: Path) -> None:
    beat = make_beat(tmp_path, retention_count=10)
    async with run_beat(beat) as base:
        await beat.pipeline.commit(make_events(30))
        await eventually(lambda: beat.log.purged_through == 20, what="retention")
        options = {"url": f"{base}/events/c"}
        exact = await asyncio.to_thread(read_range, options, 22, 27)
        with pytest.raises(GapError, match="expired"):
            await asyncio.to_thread(read_range, options, 5, 25)
        skipped = await asyncio.to_thread(read_range, {**options, "ongap": "continue"}, 5, 25)
        empty = await asyncio.to_thread(read_range, options, 25, 25)
    assert [row[SEQ] for row in exact] == [23, 24, 25, 26, 27]
    assert [row[SEQ] for row in skipped] == [21, 22, 23, 24, 25]
    assert empty == []


def guarded_feed(token: str) -> FastAPI:
    """An SSE feed of five events behind a bearer token (as the gateway serves them)."""
    app = FastAPI()
    events = [e.to_json_with_sequence(n).decode() for n, e in enumerate(make_events(5), 1)]

    @app.get("/streams/test/c")
    async def stream(request: Request) -> Any:
        if request.headers.get("authorization") != f"Bearer {token}":
            return JSONResponse({"error": "invalid_token"}, 401)
        after = int(request.headers.get("last-event-id", "0"))

        async def frames() -> AsyncIterator[dict[str, str]]:
            for n, data in enumerate(events, 1):
                if n > after:
                    yield {"id": str(n), "event": "beats.test.thing", "data": data}

        return EventSourceResponse(frames())

    return app


async def test_token_is_sent_and_a_refusal_fails_the_reader() -> None:
    async with serve_app(guarded_feed("s3cret")) as base:
        url = f"{base}/streams/test/c"
        rows = await asyncio.to_thread(read_range, {"url": url, "token": "s3cret"}, 2, 4)
        follower = Follower({"url": url, "token": "wrong"}, after=0)

        def refused() -> bool:
            with contextlib.suppress(httpx.HTTPStatusError):
                follower.take(0, 10)
                return False
            return True

        await eventually(refused, what="the 401 to surface")
    assert [row[SEQ] for row in rows] == [3, 4]
    assert isinstance(follower.error, httpx.HTTPStatusError)
    assert follower.error.response.status_code == 401
