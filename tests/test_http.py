"""The slowloris guard of every service's HTTP server (:mod:`common.http`), on a real beat:
connections that never complete a request head are closed and counted; requests, kept-alive
connections and long SSE responses are not affected."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path

import httpx
import pytest

from common.service import warn_if_public
from tests.support import make_beat, make_events, read_sse, run_beat

TIMEOUT = 0.5


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(5)
    return sock


def _closed_after(sock: socket.socket, trickle: list[bytes]) -> float:
    """Send ``trickle`` a piece every 0.15 s (never a complete head), then wait for the
    server to close; the seconds from the first byte (or from connecting) to the close."""
    started = time.monotonic()
    for piece in trickle:
        try:
            sock.sendall(piece)
        except OSError:
            break
        time.sleep(0.15)
    assert sock.recv(1024) == b""  # closed by the server, nothing sent
    return time.monotonic() - started


async def test_connections_without_a_complete_head_are_closed_and_counted(tmp_path: Path) -> None:
    beat = make_beat(tmp_path, http_head_timeout=TIMEOUT)
    async with run_beat(beat) as base, httpx.AsyncClient(base_url=base) as client:
        silent, trickling = _connect(beat.settings.port), _connect(beat.settings.port)
        head = [b"GET /readyz HTTP/1.1\r\n", b"Host: x\r\n", b"X-a: 1\r\n", b"X-b: 2\r\n"] * 3
        closes = await asyncio.gather(
            asyncio.to_thread(_closed_after, silent, []),
            asyncio.to_thread(_closed_after, trickling, head),
            client.get("/readyz"),  # others are served meanwhile
        )
        silent.close()
        trickling.close()
        metrics = (await client.get("/metrics")).text
    assert closes[2].status_code == 200
    assert TIMEOUT * 0.8 < closes[0] < TIMEOUT + 2
    assert TIMEOUT * 0.8 < closes[1] < TIMEOUT + 2  # the trickle did not extend the deadline
    assert "beats_http_head_timeouts_total 2.0" in metrics


async def test_requests_keep_alive_and_long_streams_are_not_cut(tmp_path: Path) -> None:
    beat = make_beat(tmp_path, http_head_timeout=TIMEOUT)
    async with run_beat(beat) as base, httpx.AsyncClient(base_url=base) as client:
        for _ in range(3):  # one kept-alive connection, idle between requests
            assert (await client.get("/readyz")).status_code == 200
            await asyncio.sleep(TIMEOUT * 1.5)
        stream = asyncio.create_task(read_sse(f"{base}/events?last_event_id=0", count=2))
        await beat.pipeline.commit(make_events(1))
        await asyncio.sleep(TIMEOUT * 3)  # the SSE response outlives the head deadline
        await beat.pipeline.commit(make_events(1, start=1))
        assert [m.id for m in await stream] == ["1", "2"]
    assert beat.metrics.http_head_timeouts._value.get() == 0


async def test_a_beat_bound_beyond_loopback_says_its_port_is_unauthenticated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="common.service")
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.5"):
        warn_if_public(host, "x")
    assert not caplog.records
    beat = make_beat(tmp_path, host="0.0.0.0")
    async with run_beat(beat), httpx.AsyncClient() as client:
        channels = await client.get(f"http://127.0.0.1:{beat.settings.port}/channels")
    assert channels.json() == {"channels": None}  # a kernel test beat accepts any channel
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "0.0.0.0" in warning and "no authentication" in warning
