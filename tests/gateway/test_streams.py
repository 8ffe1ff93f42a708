"""Streams through the gateway over real HTTP: fan-out, replay, hand-over, restarts, limits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from pathlib import Path

import httpx
import pytest
from httpx_sse import aconnect_sse

from common.client import subscribe
from common.envelope import CloudEvent
from common.service import Beat
from common.supervise import Backoff
from gateway.service import Gateway
from tests.gateway.support import beat_named, gateway_settings, run_gateway
from tests.support import SseMessage, eventually, make_events, read_sse, run_beat, stalled_socket

FAST = Backoff(min_delay=0.05, max_delay=0.5)


def ids(messages: list[SseMessage]) -> list[int]:
    return [int(m.id) for m in messages]


async def commit(
    beat: Beat, count: int, *, start: int = 0, step: int = 5, channel: str = "c"
) -> None:
    """Commit ``count`` events in small batches, yielding between them (traffic, not a lump)."""
    for first in range(start, start + count, step):
        batch = make_events(min(step, start + count - first), start=first, channel=channel)
        await beat.pipeline.commit(batch)
        await asyncio.sleep(0)


async def upstream_head(gateway: Gateway, head: int, label: str = "test") -> None:
    def reached() -> bool:
        return any(u.label == label and u.head == head for u in gateway.pool.all())

    await eventually(reached, what=f"the upstream {label} at {head}")


async def test_replay_from_ring_and_from_beat_hands_over_to_live(tmp_path: Path) -> None:
    beat = beat_named(tmp_path, "test")
    async with (
        run_beat(beat),
        run_gateway(gateway_settings({"test": beat}, ring_size=10)) as (
            gateway,
            base,
        ),
    ):
        url = f"{base}/streams/test"
        keeper = asyncio.create_task(read_sse(url, count=40, timeout=20))
        await eventually(lambda: len(gateway.clients) == 1, what="the live client")
        await upstream_head(gateway, 0)
        await commit(beat, 30)
        await upstream_head(gateway, 30)
        ring_before = gateway.metrics.replays.labels("ring")._value.get()
        from_ring = asyncio.create_task(read_sse(f"{url}?last_event_id=25", count=15))
        from_beat = asyncio.create_task(
            read_sse(url, count=35, headers={"Last-Event-ID": "5"}, timeout=20)
        )
        await eventually(lambda: len(gateway.clients) == 3, what="the replaying clients")
        await commit(beat, 10, start=30)  # while they replay: the hand-over must be exact
        assert ids(await from_ring) == list(range(26, 41))
        assert ids(await from_beat) == list(range(6, 41))
        assert ids(await keeper) == list(range(1, 41))
        assert gateway.metrics.replays.labels("ring")._value.get() > ring_before
        assert gateway.metrics.replays.labels("beat")._value.get() >= 1
        # a client that read the beat directly moves to the gateway with the same id
        beat_url = f"http://127.0.0.1:{beat.settings.port}/events?last_event_id=0"
        direct = await read_sse(beat_url, count=12)
        moved = await read_sse(f"{url}?last_event_id={direct[-1].id}", count=3)
        assert ids(direct)[-1] == 12 and ids(moved) == [13, 14, 15]


async def test_gap_signal_of_the_beat_is_passed_through(tmp_path: Path) -> None:
    beat = beat_named(tmp_path, "test")
    async with run_beat(beat), run_gateway(gateway_settings({"test": beat})) as (gateway, base):
        await commit(beat, 4)
        messages = await read_sse(f"{base}/streams/test?last_event_id=1000", count=5)
    assert messages[0].event == "beats.gap" and messages[0].id == ""
    assert messages[0].json() == {"requested": 1000, "resumed_after": 0, "reason": "ahead-of-log"}
    assert ids(messages[1:]) == [1, 2, 3, 4]
    assert gateway.metrics.gaps._value.get() == 1


async def test_one_upstream_connection_for_many_clients(tmp_path: Path) -> None:
    beat = beat_named(tmp_path, "test")
    async with (
        run_beat(beat),
        run_gateway(gateway_settings({"test": beat})) as (gateway, base),
        httpx.AsyncClient(limits=httpx.Limits(max_connections=None)) as http,
    ):
        readers = [
            asyncio.create_task(read_sse(f"{base}/streams/test", count=10, client=http))
            for _ in range(40)
        ]
        readers += [
            asyncio.create_task(read_sse(f"{base}/streams", count=10, client=http))
            for _ in range(10)
        ]
        await eventually(lambda: len(gateway.clients) == 50, what="50 clients")
        await upstream_head(gateway, 0)
        # the upstream knows the head (from /readyz) before its stream from the beat is open
        await eventually(lambda: beat.hub.subscriber_count > 0, what="the upstream's stream")
        assert beat.hub.subscriber_count == 1
        await commit(beat, 10)
        results = await asyncio.gather(*readers)
        assert all([m.json()["data"]["n"] for m in r] == list(range(10)) for r in results)
        assert beat.hub.subscriber_count == 1
        await eventually(lambda: not gateway.pool.all(), what="the upstream to close")
        await eventually(lambda: beat.hub.subscriber_count == 0, what="the beat to see it go")


async def test_beat_restarted_mid_stream_clients_see_no_gap(tmp_path: Path) -> None:
    beat = beat_named(tmp_path, "test")
    port = beat.settings.port
    settings = gateway_settings({"test": beat})
    async with run_gateway(settings) as (gateway, base):
        async with run_beat(beat):
            readers = [
                asyncio.create_task(read_sse(f"{base}/streams/test", count=40, timeout=30))
                for _ in range(3)
            ]
            await eventually(lambda: len(gateway.clients) == 3, what="the clients")
            await upstream_head(gateway, 0)
            await commit(beat, 20)
        # the beat is down: the clients stay connected to the gateway
        restarted = beat_named(tmp_path, "test", port=port)
        async with run_beat(restarted):
            await restarted.pipeline.commit(make_events(5, start=20))  # before the gateway is back
            await upstream_head(gateway, 25)
            await commit(restarted, 15, start=25)
            results = await asyncio.gather(*readers)
    for messages in results:
        assert ids(messages) == list(range(1, 41))
        assert [m.json()["data"]["n"] for m in messages] == list(range(40))
    assert gateway.metrics.upstream_reconnects.labels("test")._value.get() >= 1


async def test_a_live_client_of_a_beat_that_is_down_is_answered_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live client's answer waits for its stream's position, but not for a beat that cannot
    tell it: the upstream's failed try ends the wait (the bound is raised to 30 s here, so
    only that can answer within 10 s). Once the beat is up, the client gets its events."""
    monkeypatch.setattr("gateway.routes._POSITION_WAIT", 30.0)
    beat = beat_named(tmp_path, "test")
    async with (
        run_gateway(gateway_settings({"test": beat})) as (gateway, base),
        httpx.AsyncClient(timeout=30) as client,
        contextlib.AsyncExitStack() as stack,
    ):
        async with asyncio.timeout(10):
            sse = await stack.enter_async_context(
                aconnect_sse(client, "GET", f"{base}/streams/test")
            )
        events = (m async for m in sse.aiter_sse() if m.data)
        async with run_beat(beat):
            await upstream_head(gateway, 0)
            await commit(beat, 3)
            async with asyncio.timeout(10):
                got = [json.loads((await anext(events)).data)["data"]["n"] for _ in range(3)]
    assert got == [0, 1, 2]


async def test_filters_over_http(tmp_path: Path) -> None:
    beat = beat_named(tmp_path, "test")
    async with run_beat(beat), run_gateway(gateway_settings({"test": beat})) as (gateway, base):
        await commit(beat, 10)
        url = f"{base}/streams/test?last_event_id=0"
        two = await read_sse(f"{url}&any.exact.subject=s3&any.exact.subject=s7", count=2)
        assert ids(two) == [4, 8]
        data = await read_sse(f"{url}&data.n=5&prefix.type=beats.test", count=1)
        assert ids(data) == [6]
        json_filter = '[{"not":{"prefix":{"subject":"s"}}}]'
        tail = asyncio.create_task(read_sse(f"{url}&filter={json_filter}", count=1))
        await eventually(lambda: len(gateway.clients) == 1, what="the filtered client")
        await beat.pipeline.commit(make_events(1, start=10))  # subject s10: filtered out too
        from common.envelope import new_event

        odd = new_event(
            beat="t", type="beats.test.odd", source="t://", channel="c", partitionkey="k"
        )
        await beat.pipeline.commit([odd])
        assert [m.event for m in await tail] == ["beats.test.odd"]
        async with httpx.AsyncClient() as http:
            bad = await http.get(f"{url}&regex.subject=s.*")
            assert bad.status_code == 400
            assert "unknown query parameter 'regex.subject'" in bad.json()["detail"]
            bad = await http.get(f"{url}&filter=[{{")
            assert bad.status_code == 400 and "not valid JSON" in bad.json()["detail"]
        assert gateway.metrics.filtered.labels("filter")._value.get() >= 8 + 9 + 11


async def test_merged_stream_resumes_from_its_position_vector(tmp_path: Path) -> None:
    a, b = beat_named(tmp_path, "a"), beat_named(tmp_path, "b")
    async with (
        run_beat(a),
        run_beat(b),
        run_gateway(gateway_settings({"a": a, "b": b})) as (
            gateway,
            base,
        ),
    ):
        await commit(a, 3)
        await commit(b, 2)
        everything = await read_sse(f"{base}/streams?last_event_id=0", count=5)
        vectors = {m.id for m in everything}
        assert {"a=3;b=2"} <= vectors or everything[-1].id == "a=3;b=2"
        assert sorted((m.json()["beat"], m.json()["sequence"]) for m in everything) == [
            ("test", 1), ("test", 1), ("test", 2), ("test", 2), ("test", 3)
        ]  # fmt: skip
        resumed = asyncio.create_task(
            read_sse(f"{base}/streams", count=3, headers={"Last-Event-ID": "a=1;b=2"})
        )
        await eventually(lambda: len(gateway.clients) == 1, what="the resumed client")
        await commit(b, 1, start=2)
        got = await resumed
        by_beat = sorted((m.id.split(";")[0], m.json()["sequence"]) for m in got)
        assert sorted(m.json()["sequence"] for m in got) == [2, 3, 3]
        assert got[-1].id == "a=3;b=3" and len(by_beat) == 3
        async with httpx.AsyncClient() as http:
            for bad in ("7", "a=x", "a:3"):
                response = await http.get(f"{base}/streams", headers={"Last-Event-ID": bad})
                assert response.status_code == 400 and "label=seq" in response.json()["detail"]
            missing = await http.get(f"{base}/streams/nope")
            assert missing.status_code == 404


async def test_max_streams_answers_503_with_retry_after(tmp_path: Path) -> None:
    beat = beat_named(tmp_path, "test")
    settings = gateway_settings({"test": beat}, max_streams=2, retry_after=7)
    async with run_beat(beat), run_gateway(settings) as (gateway, base):
        async with httpx.AsyncClient() as http, contextlib.AsyncExitStack() as stack:
            for _ in range(2):
                response = await stack.enter_async_context(http.stream("GET", f"{base}/streams"))
                assert response.status_code == 200
            refused = await http.get(f"{base}/streams/test")
            assert refused.status_code == 503 and refused.headers["retry-after"] == "7"
            assert refused.json()["error"] == "busy"
        await eventually(lambda: not gateway.clients, what="the streams to be released")
        await commit(beat, 1)
        assert ids(await read_sse(f"{base}/streams/test?last_event_id=0", count=1)) == [1]
        assert gateway.metrics.rejected._value.get() == 1


def _read_all(sock: socket.socket) -> bytes:
    """Everything up to the end of the (chunked) response or of the connection."""
    raw = b""
    sock.settimeout(20)
    while not raw.endswith(b"\r\n0\r\n\r\n") and (chunk := sock.recv(65536)):
        raw += chunk
    return raw


@pytest.mark.slow
async def test_slow_client_is_dropped_and_resumes_while_others_keep_up(tmp_path: Path) -> None:
    beat = beat_named(tmp_path, "test")
    settings = gateway_settings({"test": beat}, client_queue_size=100)
    total = 1500
    async with run_beat(beat), run_gateway(settings) as (gateway, base):
        fast = asyncio.create_task(read_sse(f"{base}/streams/test", count=total, timeout=60))
        slow = stalled_socket(settings.port, "/streams/test")
        await eventually(lambda: len(gateway.clients) == 2, what="both clients")
        await upstream_head(gateway, 0)
        for first in range(0, total, 20):  # paced by the fast client, never by the slow one
            await beat.pipeline.commit(make_events(20, start=first, pad=4000))
            await eventually(lambda: min(len(c.out) for c in gateway.clients) == 0)
        assert ids(await fast) == list(range(1, total + 1))  # never held back by the slow one
        await eventually(lambda: gateway.metrics.overflow._value.get() == 1, what="the overflow")
        raw = await asyncio.to_thread(_read_all, slow)
        slow.close()
    assert b": overflow, reconnect with Last-Event-ID to resume\nretry: 500" in raw
    received = [int(n) for n in re.findall(rb"^id: (\d+)$", raw, flags=re.MULTILINE)]
    assert received == list(range(1, len(received) + 1)) and len(received) < total
    beat = beat_named(tmp_path, "test", port=beat.settings.port)
    async with run_beat(beat), run_gateway(gateway_settings({"test": beat})) as (_, base):
        rest = await read_sse(
            f"{base}/streams/test", count=total - len(received),
            headers={"Last-Event-ID": str(received[-1])}, timeout=30,
        )  # fmt: skip
    assert ids(rest) == list(range(len(received) + 1, total + 1))


async def test_python_client_follows_the_merged_stream_across_a_gateway_restart(
    tmp_path: Path,
) -> None:
    a, b = beat_named(tmp_path, "a"), beat_named(tmp_path, "b")
    settings = gateway_settings({"a": a, "b": b})
    got: list[tuple[str, int]] = []  # (event id, sequence in its beat)

    async def follow(base: str) -> None:
        async for item in subscribe(f"{base}/streams", last_event_id=0, backoff=FAST):
            if isinstance(item, CloudEvent) and item.sequence:
                got.append((item.id, item.sequence))

    async with run_beat(a), run_beat(b):
        await a.pipeline.commit(make_events(3))
        await b.pipeline.commit(make_events(2))
        async with run_gateway(settings) as (_, base):
            reader = asyncio.create_task(follow(base))
            await eventually(lambda: len(got) == 5, what="the first events")
        await a.pipeline.commit(make_events(2, start=3))  # while the gateway is down
        async with run_gateway(settings):
            await eventually(lambda: len(got) == 7, what="the rest, resumed by position vector")
        reader.cancel()
    assert len({event_id for event_id, _ in got}) == 7  # nothing twice
    assert sorted(sequence for _, sequence in got) == [1, 1, 2, 2, 3, 4, 5]


async def test_a_client_that_stops_taking_writes_is_released_and_counted(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Past ``--sse-send-timeout`` a stalled gateway client is dropped without a traceback and
    its slot released (the response's background task runs), so it no longer counts."""
    beat = beat_named(tmp_path, "test")
    settings = gateway_settings({"test": beat}, sse_send_timeout=0.5, client_queue_bytes=64 << 20)
    async with run_beat(beat), run_gateway(settings) as (gateway, base):
        await beat.pipeline.commit(make_events(16, pad=1 << 20))
        sock = stalled_socket(settings.port, "/streams/test?last_event_id=0")
        try:
            await eventually(
                lambda: gateway.metrics.send_timeouts._value.get() == 1,
                what="the stalled write given up",
            )
            await eventually(lambda: len(gateway.clients) == 0, what="the client released")
        finally:
            sock.close()
        replayed = await read_sse(f"{base}/streams/test?last_event_id=0", count=16, timeout=30)
    assert ids(replayed) == list(range(1, 17))
    server_log = capfd.readouterr().err + caplog.text  # uvicorn logs through the root logger
    assert "Exception in ASGI application" not in server_log and "Traceback" not in server_log
