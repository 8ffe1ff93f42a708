"""1,000 concurrent SSE clients through one gateway and one upstream connection (bounded)."""

from __future__ import annotations

import asyncio
import re
import resource
from pathlib import Path

import pytest

from tests.gateway.support import beat_named, gateway_settings, run_gateway
from tests.support import eventually, make_events, run_beat

CLIENTS = 1000
EVENTS = 20
_ID = re.compile(rb"^id: (\d+)$", re.MULTILINE)


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


async def _client(port: int, connected: asyncio.Event | None = None) -> list[int]:
    """A minimal SSE client on a raw connection: the ids it receives, up to ``EVENTS``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /streams/test HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n")
    received: list[int] = []
    buffer = b""
    try:
        while not received or received[-1] < EVENTS:
            chunk = await reader.read(65536)
            if not chunk:
                break
            buffer += chunk
            lines_end = buffer.rfind(b"\n")
            received += [int(n) for n in _ID.findall(buffer[: lines_end + 1])]
            buffer = buffer[lines_end + 1 :]
    finally:
        writer.close()
    return received


@pytest.mark.slow
async def test_thousand_concurrent_clients_share_one_upstream(tmp_path: Path) -> None:
    _raise_fd_limit(3 * CLIENTS + 256)
    beat = beat_named(tmp_path, "test")
    settings = gateway_settings({"test": beat}, sse_heartbeat=60.0)
    async with run_beat(beat), run_gateway(settings) as (gateway, _), asyncio.timeout(60):
        clients = []
        for first in range(0, CLIENTS, 100):  # connect in waves: no accept-queue overflow
            clients += [asyncio.create_task(_client(settings.port)) for _ in range(100)]
            await eventually(lambda n=first + 100: len(gateway.clients) == n, what="a wave")
        await eventually(lambda: beat.hub.subscriber_count > 0, what="the upstream's stream")
        assert beat.hub.subscriber_count == 1
        await eventually(lambda: gateway.pool.all()[0].head == 0, what="the upstream")
        loop = asyncio.get_running_loop()
        started = loop.time()
        for first in range(0, EVENTS, 5):
            await beat.pipeline.commit(make_events(5, start=first))
        results = await asyncio.gather(*clients)
        elapsed = loop.time() - started
    assert all(ids == list(range(1, EVENTS + 1)) for ids in results)
    assert gateway.metrics.overflow._value.get() == 0
    print(f"{CLIENTS} clients x {EVENTS} events delivered in {elapsed:.2f}s")
