"""The Python client (common.client) against a real kernel beat over HTTP: replay then live,
resume across a beat restart and an overflow disconnect with no gap and no duplicate, the gap
signal, bearer tokens, refusals that are not retried, and ``beats tail``."""

from __future__ import annotations

import asyncio
import io
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic_settings import CliApp
from sse_starlette import EventSourceResponse

from common.client import (
    FeedError,
    Gap,
    TailSettings,
    format_item,
    iter_events,
    main,
    subscribe,
)
from common.envelope import CloudEvent
from common.service import Beat
from common.supervise import Backoff
from tests.support import eventually, make_beat, make_events, run_beat, serve_app

FAST = Backoff(min_delay=0.05, max_delay=0.5)


async def take(items: AsyncIterator[Any], count: int, timeout: float = 20) -> list[Any]:
    got: list[Any] = []
    async with asyncio.timeout(timeout):
        async for item in items:
            got.append(item)
            if len(got) == count:
                break
    return got


async def test_replay_then_live_as_cloudevents(tmp_path: Path) -> None:
    beat = make_beat(tmp_path)
    async with run_beat(beat) as base:
        await beat.pipeline.commit(make_events(3))
        stream = subscribe(f"{base}/events/c", last_event_id=0)
        first = await take(stream, 3)
        await beat.pipeline.commit(make_events(2, start=3))
        rest = await take(stream, 2)
        await stream.aclose()
    events = first + rest
    assert all(isinstance(e, CloudEvent) for e in events)
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5]
    assert [e.data["n"] for e in events] == [0, 1, 2, 3, 4]
    assert {e.channel for e in events} == {"c"}
    assert events[0].type == "beats.test.thing" and events[0].subject == "s0"


async def test_resumes_across_a_beat_restart_without_gap_or_duplicate(tmp_path: Path) -> None:
    beat = make_beat(tmp_path)
    received: list[CloudEvent | Gap] = []

    async def consume() -> None:
        async for item in subscribe(f"{base}/events", last_event_id=0, backoff=FAST):
            received.append(item)

    async with run_beat(beat) as base:
        await beat.pipeline.commit(make_events(20))
        consumer = asyncio.create_task(consume())
        await eventually(lambda: len(received) == 20, what="the first 20 events")
    # the beat is down: the client keeps retrying; the same beat (port, log) comes back
    beat = Beat(name=beat.name, settings=beat.settings, source=type(beat.source)())
    async with run_beat(beat):
        await beat.pipeline.commit(make_events(30, start=20))
        await eventually(lambda: len(received) == 50, timeout=20, what="50 events")
        await beat.pipeline.commit(make_events(5, start=50))
        await eventually(lambda: len(received) == 55, what="55 events")
        consumer.cancel()
    sequences = [e.sequence for e in received if isinstance(e, CloudEvent)]
    assert sequences == list(range(1, 56))


async def test_gap_is_yielded_before_the_events_that_follow(tmp_path: Path) -> None:
    beat = make_beat(tmp_path, retention_count=5)
    async with run_beat(beat) as base:
        await beat.pipeline.commit(make_events(20))
        await eventually(lambda: beat.log.purged_through == 15, what="retention")
        items = await take(subscribe(f"{base}/events", last_event_id=2), 6)
    assert items[0] == Gap(requested=2, resumed_after=15, reason="expired")
    assert [e.sequence for e in items[1:]] == [16, 17, 18, 19, 20]


async def test_blocking_iterator_resumes_after_an_overflow_disconnect(tmp_path: Path) -> None:
    beat = make_beat(tmp_path, sse_queue_size=10)
    async with run_beat(beat) as base:
        await beat.pipeline.commit(make_events(1))
        received: list[int] = []

        def consume() -> None:
            for item in iter_events(f"{base}/events", last_event_id=0, backoff=FAST):
                assert isinstance(item, CloudEvent) and item.sequence is not None
                received.append(item.sequence)
                if len(received) == 301:
                    return

        reader = asyncio.create_task(asyncio.to_thread(consume))
        await eventually(lambda: received == [1], what="the first event")
        for start in range(1, 301, 100):  # bursts far beyond the subscriber's buffer of 10
            await beat.pipeline.commit(make_events(100, start=start))
        await asyncio.wait_for(reader, 30)
    assert beat.metrics.sse_overflow._value.get() >= 1, "no overflow happened"
    assert received == list(range(1, 302))


def guarded_app(events: list[dict[str, Any]]) -> tuple[FastAPI, list[dict[str, str]]]:
    seen: list[dict[str, str]] = []
    app = FastAPI()

    @app.get("/events")
    async def stream(request: Request) -> Any:
        seen.append(dict(request.headers))
        if request.headers.get("authorization") != "Bearer good":
            return JSONResponse({"error": "invalid_token"}, 401)

        async def frames() -> AsyncIterator[dict[str, str]]:
            for event in events:
                yield event

        return EventSourceResponse(frames())

    return app, seen


async def test_bearer_token_is_sent_and_a_refusal_is_not_retried() -> None:
    event = CloudEvent.from_json(make_events(1)[0].to_json_with_sequence(7))
    frame = {"id": "7", "event": event.type, "data": event.to_json().decode()}
    app, seen = guarded_app([frame])
    async with serve_app(app) as base:
        items = await take(subscribe(f"{base}/events", token="good", last_event_id=3), 1)
        with pytest.raises(FeedError, match="401"):
            await take(subscribe(f"{base}/events", token="bad", backoff=FAST), 1)
    assert items[0].sequence == 7
    assert seen[0]["authorization"] == "Bearer good" and seen[0]["last-event-id"] == "3"
    assert len(seen) == 2, "the 401 was retried"


async def test_tail_prints_events_and_stops_on_shutdown(tmp_path: Path) -> None:
    beat = make_beat(tmp_path)
    async with run_beat(beat) as base:
        await beat.pipeline.commit(make_events(2))
        settings = TailSettings(url=f"{base}/events", last_event_id=0)
        out, shutdown = io.StringIO(), asyncio.Event()
        tail = asyncio.create_task(main(settings, shutdown, out=out))
        await eventually(lambda: out.getvalue().count("\n") == 2, what="two printed lines")
        shutdown.set()
        await asyncio.wait_for(tail, 5)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("#1 ") and "beats.test.thing s0" in lines[0]
    assert lines[1].endswith('{"n":1,"pad":""}')


def test_tail_options_parse_like_the_beats_command_line() -> None:
    settings = CliApp.run(
        TailSettings,
        cli_args=["http://h:8101/events/messages", "--last-event-id", "0", "--output", "json"],
        cli_prog_name="beats tail",
    )
    assert settings.url == "http://h:8101/events/messages"
    assert settings.last_event_id == 0 and settings.output == "json" and settings.token is None


def test_pretty_lines_are_cut_and_gaps_are_spelled_out() -> None:
    event = CloudEvent.from_json(make_events(1, pad=500)[0].to_json_with_sequence(3))
    line = format_item(event, width=80)
    assert len(line) == 80 and line.startswith("#3 ") and line.endswith("…")
    assert format_item(Gap(2, 15, "expired")) == (
        "-- gap: events after 2 are gone (expired); resumed after 15"
    )
    assert format_item(event, output="json") == event.to_json().decode()


async def test_beats_tail_command_prints_a_feed_and_stops_on_sigint(tmp_path: Path) -> None:
    beat = make_beat(tmp_path)
    async with run_beat(beat) as base:
        await beat.pipeline.commit(make_events(3))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "beats", "tail", f"{base}/events",
            "--last-event-id", "1", "--output", "json",
            stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).parent.parent,
        )  # fmt: skip
        assert process.stdout is not None
        lines = [await asyncio.wait_for(process.stdout.readline(), 20) for _ in range(2)]
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    events = [CloudEvent.from_json(line) for line in lines]
    assert [e.sequence for e in events] == [2, 3] and events[0].subject == "s1"
