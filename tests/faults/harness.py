"""Real services as subprocesses at a steady load, for the system-level fault scenarios.

:func:`stack` starts one beat (``python -m beats run <beat>``) with its upstream under load —
Mosquitto + the sensor simulator, or the OpenCTI / Ditto / Orion emulator running its scenario —
and yields a :class:`Stack`. Every scenario reports a :class:`Report`: what reached SSE, what
reached Kafka, duplicates, and the recovery time; it prints one line and the test asserts on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer

from beats.opencti.scenario import Scenario, stream_event
from common.client import Gap, subscribe
from common.supervise import Backoff
from tests.brokers import MosquittoBroker
from tests.processes import ROOT, ServiceProcess
from tests.support import eventually, free_port

__all__ = [
    "BEATS",
    "OUTAGE",
    "Report",
    "SseCounter",
    "Stack",
    "append_indicators",
    "kafka_sequences",
    "stack",
]

BEATS = ("hivemq", "opencti", "ditto", "fiware")
OUTAGE = float(os.environ.get("BEATS_FAULT_OUTAGE", "5"))
"""Seconds of each outage: short in ``make test``, 60 in ``make faults``."""
TOKEN = "fault-token"


@dataclass
class Report:
    scenario: str
    head: int
    sse: int
    sse_gaps: int
    kafka: int = -1
    duplicates: int = 0
    recovery_s: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.notes.items())
        kafka = f"Kafka {self.kafka} (duplicates {self.duplicates}), " if self.kafka >= 0 else ""
        return (
            f"FAULT {self.scenario}: log head {self.head}, SSE {self.sse} (gaps {self.sse_gaps}), "
            f"{kafka}recovery {self.recovery_s:.1f}s {extra}"
        ).rstrip()


@dataclass
class Stack:
    beat: ServiceProcess
    upstream: list[subprocess.Popen[bytes] | ServiceProcess]
    upstream_url: str | None = None

    def stop_load(self) -> None:
        for part in self.upstream:
            _kill(part)

    @property
    def broker(self) -> MosquittoBroker:
        return next(p for p in self.upstream if isinstance(p, MosquittoBroker))

    async def head(self) -> int:
        async with httpx.AsyncClient(timeout=5) as client:
            return int((await client.get(f"{self.beat.base}/readyz")).json()["log"]["head"])

    async def kafka_lag(self) -> int:
        async with httpx.AsyncClient(timeout=5) as client:
            body = (await client.get(f"{self.beat.base}/readyz")).json()
        return int(body.get("kafka", {}).get("lag", -1))


def _emulator(name: str, port: int, log: Path, *args: str) -> ServiceProcess:
    process = ServiceProcess(["emulate", name, *args], port=port, log=log)
    process.start(ready=False)
    return process


@contextlib.contextmanager
def _upstream(
    beat: str, workdir: Path, count: int, extra: list[str]
) -> Iterator[tuple[list[Any], list[str]]]:
    """The upstream under load, and the beat options that point at it. ``count``: a known
    number of messages (MQTT) instead of an endless stream; OpenCTI then generates nothing
    (the test appends events itself)."""
    port, log = free_port(), workdir / f"{beat}-upstream.log"
    parts: list[Any] = []
    try:
        if beat == "hivemq":
            (workdir / "mqtt").mkdir()
            broker = MosquittoBroker(workdir / "mqtt")
            broker.start()
            parts.append(broker)
            simulator = [sys.executable, "-m", "beats", "simulate", "sensors", "--mqtt-url",
                         broker.url, "--stations", "5", "--rate", "20", "--seed", "1",
                         "--count", str(count)]  # fmt: skip
            parts.append(simulator)  # started once the beat is subscribed: see stack()
            options = ["--mqtt-url", broker.url, "--mqtt-topic", "city/#", "--mqtt-version", "5",
                       "--mqtt-client-id", "fault-beat", "--no-mqtt-clean-start"]  # fmt: skip
        elif beat == "opencti":
            rate = "0" if count else "50"
            parts.append(
                _emulator("opencti", port, log, "--token", TOKEN, "--scenario-rate", rate, *extra)
            )
            options = ["--opencti-url", f"http://127.0.0.1:{port}", "--opencti-token", TOKEN,
                       "--opencti-start", "0"]  # fmt: skip
        elif beat == "ditto":
            parts.append(_emulator("ditto", port, log, "--scenario", "--scenario-interval", "0.02"))
            options = ["--ditto-url", f"http://127.0.0.1:{port}", "--ditto-username", "ditto",
                       "--ditto-password", "ditto", "--namespaces", "org.works.cars"]  # fmt: skip
        else:
            parts.append(_emulator("orion", port, log, "--scenario", "--scenario-interval", "0.02"))
            options = ["--orion-url", f"http://127.0.0.1:{port}",
                       "--subscription-check-interval", "1"]  # fmt: skip
        yield parts, options
    finally:
        for part in parts:
            _kill(part)


def _kill(part: Any) -> None:
    if isinstance(part, MosquittoBroker):
        part.kill()
        return
    process = part.process if isinstance(part, ServiceProcess) else part
    if isinstance(process, subprocess.Popen) and process.poll() is None:
        process.kill()
        process.wait(10)


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _url_of(parts: list[Any]) -> str | None:
    return next((p.base for p in parts if isinstance(p, ServiceProcess)), None)


@contextlib.asynccontextmanager
async def stack(
    beat: str,
    workdir: Path,
    *,
    kafka: str | None = None,
    count: int = 0,
    upstream: tuple[str, ...] = (),
) -> AsyncIterator[Stack]:
    """``upstream``: extra options of the OpenCTI emulator (e.g. ``--drop-every``)."""
    with _upstream(beat, workdir, count, list(upstream)) as (parts, options):
        port = free_port()
        if beat == "fiware":
            options += ["--notify-url", f"http://127.0.0.1:{port}/notify"]
        if kafka is not None:
            options += ["--kafka-bootstrap", kafka, "--no-kafka-idempotence",
                        "--kafka-timeout", "2"]  # fmt: skip
        process = ServiceProcess(
            ["run", beat, "--data-dir", str(workdir / beat), "--log-level", "warning", *options],
            port=port, log=workdir / f"{beat}.log",
        )  # fmt: skip
        await asyncio.to_thread(process.start)
        for n, part in enumerate(parts):
            if isinstance(part, list):  # a load generator that must not publish before then
                parts[n] = _spawn(part, workdir / "load.log")
        try:
            yield Stack(process, parts, upstream_url=_url_of(parts))
        finally:
            process.stop()


class SseCounter:
    """Reads a feed from the start with :func:`common.client.subscribe` (which reconnects and
    resumes by ``Last-Event-ID``) and keeps every sequence it saw."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sequences: list[int] = []
        self.contents: set[tuple[str | None, str]] = set()
        self.gaps = 0
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        backoff = Backoff(min_delay=0.1, max_delay=1.0)
        async for item in subscribe(self.url, last_event_id=0, backoff=backoff):
            if isinstance(item, Gap):
                self.gaps += 1
            elif item.sequence is not None:
                self.sequences.append(item.sequence)
                self.contents.add((item.subject, json.dumps(item.data, sort_keys=True)))

    def __enter__(self) -> SseCounter:
        self.task = asyncio.create_task(self._run(), name=f"sse:{self.url}")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()

    async def wait_for(self, head: int, timeout: float = 60) -> None:
        def reached() -> bool:
            return bool(self.sequences) and self.sequences[-1] >= head

        await eventually(reached, timeout=timeout, what=f"SSE up to {head}")

    def missing(self, head: int) -> set[int]:
        return set(range(1, head + 1)) - set(self.sequences)

    def duplicates(self) -> int:
        return len(self.sequences) - len(set(self.sequences))


async def kafka_sequences(
    bootstrap: str, beat: str, *, until: int, timeout: float = 60
) -> tuple[set[int], int]:
    """Sequences found in every ``beats.<beat>.*`` topic (dead letters included) once
    ``1..until`` are all there or ``timeout`` passed; and the number of records read."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None,
        metadata_max_age_ms=1000,
    )  # fmt: skip
    consumer.subscribe(pattern=rf"^beats\.{beat}\..*")
    await consumer.start()
    seen: set[int] = set()
    records = 0
    deadline = time.monotonic() + timeout
    try:
        while len(seen & set(range(1, until + 1))) < until and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records += len(batch)
                seen.update(int(json.loads(r.value)["sequence"]) for r in batch)
    finally:
        await consumer.stop()
    return seen, records


async def append_indicators(url: str, count: int) -> None:
    """Append ``count`` indicator creations to the OpenCTI emulator, 10 every 0.1 s."""
    scenario = Scenario(seed=5)
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for _ in range(count // 10):
            frames = [{"data": stream_event("create", *scenario.indicator())} for _ in range(10)]
            (await client.post("/admin/events", json=frames)).raise_for_status()
            await asyncio.sleep(0.1)
