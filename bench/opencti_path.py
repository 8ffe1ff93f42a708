"""Benchmark: OpenCTI stream → OpenCTI beat → log → SSE and Kafka, against a bare reader.

The OpenCTI emulator runs as its own process. N generated STIX events (about 1.5 KB each) are
appended through its admin API while a reader is connected; we time, from the first append,
until

* a bare httpx-sse reader of the emulator's stream has all N data frames (the baseline: the
  ceiling of reading this stream in Python), and, in a second round with the same N,
* the beat (its own process, reading the same stream) has served all N on its SSE stream, and
  its Kafka forwarder has had all N acknowledged.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from beats.opencti.scenario import Scenario
from bench.profiling import flame
from tests.brokers import KafkaBroker
from tests.processes import ServiceProcess
from tests.support import free_port

__all__ = ["run"]

TOKEN = "bench-token"


async def _load(url: str, events: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=60) as client:
        for i in range(0, len(events), 500):
            chunk = events[i : i + 500]
            response = await client.post(f"{url}/admin/events", json=chunk)
            response.raise_for_status()
    return started


async def _bare(url: str, events: list[dict[str, Any]]) -> float:
    received = 0
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        httpx.AsyncClient(timeout=120) as client,
        aconnect_sse(client, "GET", f"{url}/stream", headers=headers) as source,
    ):
        loading: asyncio.Task[float] | None = None
        async for sse in source.aiter_sse():
            if sse.event == "connected":
                loading = asyncio.create_task(_load(url, events))
            elif sse.event in ("create", "update", "delete", "merge"):
                received += 1
                if received == len(events):
                    assert loading is not None
                    return len(events) / (time.perf_counter() - await loading)
    raise RuntimeError("stream ended early")


async def _beat(base: str, url: str, events: list[dict[str, Any]]) -> dict[str, float]:
    count = len(events)
    async with httpx.AsyncClient(timeout=120) as client:
        head = int((await client.get(f"{base}/readyz")).json()["log"]["head"])
        started = await _load(url, events)
        sse_done = kafka_done = 0.0
        async with aconnect_sse(client, "GET", f"{base}/events?last_event_id={head}") as source:
            seen = 0
            async for sse in source.aiter_sse():
                if sse.event.startswith("beats.opencti."):
                    seen += 1
                    if seen == count:
                        sse_done = time.perf_counter()
                        break
        while not kafka_done:
            report = (await client.get(f"{base}/readyz")).json()
            if report["kafka"]["lag"] == 0 and report["log"]["head"] >= head + count:
                kafka_done = time.perf_counter()
            await asyncio.sleep(0.02)
    return {"sse": count / (sse_done - started), "kafka": count / (kafka_done - started)}


async def run(*, count: int = 10000) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-opencti-"))
    (workdir / "kafka").mkdir()
    scenario = Scenario(seed=1)
    events = [{"kind": e["type"], "data": e} for e in (scenario.create() for _ in range(count))]
    kafka = KafkaBroker(workdir / "kafka")
    kafka.start()
    emulator = ServiceProcess(
        ["emulate", "opencti", "--token", TOKEN, "--log-level", "warning"],
        port=free_port(),
        log=workdir / "emulator.log",
    )
    beat = ServiceProcess(
        [
            "run",
            "opencti",
            "--opencti-url",
            emulator.base,
            "--opencti-token",
            TOKEN,
            "--data-dir",
            str(workdir / "beat"),
            "--kafka-bootstrap",
            kafka.bootstrap,
            "--no-kafka-idempotence",
            "--log-level",
            "warning",
            "--sse-queue-size",
            "100000",
        ],
        port=free_port(),
        log=workdir / "beat.log",
    )
    try:
        emulator.start(ready=False)
        bare = await _bare(emulator.base, events)
        beat.start()
        with flame(beat.pid, "opencti_path"):
            through = await _beat(beat.base, emulator.base, events)
    finally:
        beat.stop()
        emulator.stop()
        kafka.kill()
    return {
        "events": count,
        "baseline_bare_httpx_sse_per_s": round(bare),
        "beat_sse_per_s": round(through["sse"]),
        "beat_kafka_per_s": round(through["kafka"]),
        "ratio_sse_to_baseline": round(through["sse"] / bare, 3),
        "ratio_kafka_to_baseline": round(through["kafka"] / bare, 3),
    }
