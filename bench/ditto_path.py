"""Benchmark: Ditto WebSocket → Ditto beat → log → SSE and Kafka, against a bare reader.

The Ditto emulator runs as its own process; ``POST /admin/burst`` makes N twin changes as fast
as it can, each sent to every subscribed session as a ``modified`` event. Timed from the burst
request:

* baseline: a bare ``websockets`` client with the same subscription (``START-SEND-EVENTS``,
  ACK) counting N event frames;
* the beat (its own process): until its SSE stream served N and Kafka acknowledged N.

The emulator's own event rate bounds both; the ratio says how much of it the beat keeps.
"""

from __future__ import annotations

import asyncio
import base64
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets
from httpx_sse import aconnect_sse

from bench.profiling import flame
from tests.brokers import KafkaBroker
from tests.processes import ServiceProcess
from tests.support import free_port

__all__ = ["run"]

AUTH = base64.b64encode(b"ditto:ditto").decode()


async def _burst(url: str, thing: str, count: int) -> float:
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=300) as client:
        response = await client.post(
            f"{url}/admin/burst", params={"thing_id": thing, "count": count}
        )
        response.raise_for_status()
    return started


async def _bare(url: str, count: int) -> float:
    ws_url = url.replace("http", "ws") + "/ws/2"
    headers = {"Authorization": f"Basic {AUTH}"}
    async with websockets.connect(ws_url, additional_headers=headers, max_size=None) as ws:
        await ws.send("START-SEND-EVENTS")
        assert await ws.recv() == "START-SEND-EVENTS:ACK"
        burst = asyncio.create_task(_burst(url, "bench:bare", count))
        for _ in range(count):
            await ws.recv()
        return count / (time.perf_counter() - await burst)


async def _beat(base: str, url: str, count: int) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=300) as client:
        head = int((await client.get(f"{base}/readyz")).json()["log"]["head"])
        burst = asyncio.create_task(_burst(url, "bench:beat", count))
        seen = 0
        async with aconnect_sse(client, "GET", f"{base}/events?last_event_id={head}") as source:
            async for sse in source.aiter_sse():
                if sse.event == "beats.ditto.twin.modified":
                    seen += 1
                    if seen == count:
                        break
        sse_done = time.perf_counter()
        while True:
            report = (await client.get(f"{base}/readyz")).json()
            if report["kafka"]["lag"] == 0 and report["log"]["head"] >= head + count:
                break
            await asyncio.sleep(0.02)
        kafka_done = time.perf_counter()
        started = await burst
    return {"sse": count / (sse_done - started), "kafka": count / (kafka_done - started)}


async def run(*, count: int = 10000) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-ditto-"))
    (workdir / "kafka").mkdir()
    kafka = KafkaBroker(workdir / "kafka")
    kafka.start()
    emulator = ServiceProcess(
        ["emulate", "ditto", "--session-buffer", str(count * 2), "--log-level", "warning"],
        port=free_port(),
        log=workdir / "emulator.log",
    )
    beat = ServiceProcess(
        [
            "run",
            "ditto",
            "--ditto-url",
            emulator.base,
            "--ditto-username",
            "ditto",
            "--ditto-password",
            "ditto",
            "--data-dir",
            str(workdir / "beat"),
            "--kafka-bootstrap",
            kafka.bootstrap,
            "--no-kafka-idempotence",
            "--log-level",
            "warning",
            "--sse-queue-size",
            str(count * 2),
        ],
        port=free_port(),
        log=workdir / "beat.log",
    )
    try:
        emulator.start(ready=False)
        bare = await _bare(emulator.base, count)
        beat.start()
        with flame(beat.pid, "ditto_path"):
            through = await _beat(beat.base, emulator.base, count)
    finally:
        beat.stop()
        emulator.stop()
        kafka.kill()
    return {
        "events": count,
        "baseline_bare_websockets_per_s": round(bare),
        "beat_sse_per_s": round(through["sse"]),
        "beat_kafka_per_s": round(through["kafka"]),
        "ratio_sse_to_baseline": round(through["sse"] / bare, 3),
        "ratio_kafka_to_baseline": round(through["kafka"] / bare, 3),
    }
