"""The HiveMQ beat as a real process: kill -9 mid-stream loses no QoS 1 message, and SIGTERM
shuts it down gracefully within its bound."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from common.client import subscribe
from common.envelope import CloudEvent
from tests.brokers import MosquittoBroker
from tests.hivemq.test_mqtt_beat import publisher
from tests.processes import ServiceProcess
from tests.support import eventually, free_port


@pytest.fixture
def beat_process(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[ServiceProcess]:
    args = [
        "run",
        "hivemq",
        "--mqtt-url",
        mosquitto.url,
        "--mqtt-topic",
        "crash/#",
        "--mqtt-version",
        "5",
        "--mqtt-client-id",
        "crash-test-beat",
        "--data-dir",
        str(tmp_path / "data"),
        "--shutdown-timeout",
        "5",
    ]
    service = ServiceProcess(args, port=free_port(), log=tmp_path / "beat.log")
    yield service
    service.stop()


async def head(base: str) -> int:
    async with httpx.AsyncClient() as client:
        try:
            return int((await client.get(f"{base}/readyz")).json()["log"]["head"])
        except httpx.TransportError:
            return -1


async def test_kill_9_mid_stream_loses_no_qos1_message(
    beat_process: ServiceProcess, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """While the log is held locked, messages keep arriving and cannot be committed; the beat
    is then killed. Had any of them been acknowledged on receipt (paho's default), the broker
    would not deliver them again and they would be lost."""
    total = 4000
    beat_process.start()
    async with publisher(mosquitto, v5=True) as client:

        async def send_all() -> None:
            for n in range(total):
                await client.publish("crash/x", json.dumps({"n": n}), qos=1)
                await asyncio.sleep(0.0005)

        sending = asyncio.create_task(send_all())

        async def some_committed() -> bool:
            return await head(beat_process.base) >= 300

        await eventually(some_committed, timeout=30, what="300 committed")
        lock = sqlite3.connect(tmp_path / "data" / "hivemq.db", isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # the beat's writer now waits for the database
        await asyncio.sleep(1.0)
        beat_process.kill()
        lock.execute("ROLLBACK")
        lock.close()
        assert not sending.done(), "the kill must happen mid-stream"
        await sending
    beat_process.start()

    # the writer was killed while blocked, and the test's own connection closed the database
    # last (which checkpoints and removes the WAL): the log continues above its high-water
    # mark, so sequences are not contiguous; every message must be there all the same. The
    # reader resumes like any client (the beat may end a stream that overflows during replay).
    received: set[int] = set()
    async with asyncio.timeout(60):
        async with contextlib.aclosing(
            subscribe(f"{beat_process.base}/events", last_event_id=0)
        ) as feed:
            async for item in feed:
                if isinstance(item, CloudEvent):
                    received.add(item.data["n"])
                if received >= set(range(total)):
                    break
    lost = set(range(total)) - received
    assert not lost, f"lost after kill -9: {sorted(lost)[:20]}"


async def test_sigterm_shuts_down_gracefully_within_its_bound(
    beat_process: ServiceProcess, mosquitto: MosquittoBroker
) -> None:
    beat_process.start()
    async with publisher(mosquitto) as client:
        await client.publish("crash/x", b'{"n": 1}', qos=1)
    client_http = httpx.AsyncClient(timeout=30)
    stream = client_http.stream("GET", f"{beat_process.base}/events?last_event_id=0")
    response = await stream.__aenter__()
    chunks = response.aiter_bytes()
    assert b"retry:" in await anext(chunks)
    started = time.monotonic()
    code = await asyncio.to_thread(beat_process.terminate, 20)
    elapsed = time.monotonic() - started
    rest = b"".join([chunk async for chunk in chunks])
    await stream.__aexit__(None, None, None)
    await client_http.aclose()
    assert code == 0
    assert elapsed < 5 + 2, f"shutdown took {elapsed:.1f}s"
    assert b"shutting down" in beat_process.log.read_bytes()
    del rest  # the stream was closed by the server (the loop above ended)
