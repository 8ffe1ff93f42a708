"""Running a beat as a process against its real transport, feeding it hostile input mixed with
normal input, and recording everything it did: what it served on SSE (live and replayed), what
``/readyz`` said, its memory, its log, and the same again after a kill -9 and a restart on the
same data directory with hostile input delivered again.

Each beat's module provides an :class:`Upstream` (how to start the beat and its broker or
emulator, how to send one input, how to recognise and check the events of an input);
:func:`run_scenario` plays it and returns a :class:`Report`, which :mod:`tests.hostile.contract`
judges.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
from httpx_sse import aconnect_sse

from tests.hostile.corpus import Corpus, strict_loads
from tests.processes import ServiceProcess
from tests.support import free_port

__all__ = [
    "Consumer",
    "Input",
    "Phase",
    "Report",
    "Served",
    "Upstream",
    "background",
    "commits_of",
    "interleave",
    "memory",
    "observe",
    "run_scenario",
    "start_beat",
]

IDLE_SECONDS = 10.0
"""A phase is over when its last input is served, or when nothing new was served for this long
while it was not (the beat hangs, or lost it)."""
SETTLE_SECONDS = 90.0
"""The most a phase may take after its last input was sent."""


@dataclass
class Input:
    """One input as sent: ``raw`` is what the beat receives (a dead letter's ``sha256`` is of
    these bytes) and ``key`` what its events carry (a topic, a correlator, a thing id ...)."""

    label: str
    raw: bytes
    key: str
    normal: bool = False
    why: str = ""
    status: int | None = None
    note: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


@dataclass(frozen=True)
class Served:
    """One SSE message: its id, event name, data, and the data read as strict JSON (``event``
    is ``None`` and ``error`` says why when it is not)."""

    id: str
    name: str
    data: str
    event: dict[str, Any] | None
    error: str | None

    @classmethod
    def of(cls, id: str, name: str, data: str) -> Served:
        try:
            event = strict_loads(data)
        except (ValueError, RecursionError) as exc:
            return cls(id, name, data, None, f"{type(exc).__name__}: {str(exc)[:200]}")
        if not isinstance(event, dict):
            return cls(id, name, data, None, "not a JSON object")
        return cls(id, name, data, event, None)

    @property
    def dead_letter(self) -> bool:
        return self.event is not None and str(self.event.get("type")).endswith(".deadletter")


@dataclass
class Phase:
    """What one run of the beat process did with one list of inputs."""

    inputs: list[Input]
    after: int = 0
    """The log head before the phase: its events have greater sequences."""
    live: list[Served] = field(default_factory=list)
    replay: list[Served] = field(default_factory=list)
    settled: bool = False
    can_commit: bool = False
    readyz: tuple[int, Any] = (0, None)
    head: int = -1
    alive: bool = False
    rss_start: int = 0
    rss_peak: int = 0
    metrics: str = ""
    dead_letter_channel: list[str] = field(default_factory=list)
    """The ids served on ``/events/deadletter``."""
    start_error: str = ""

    def events(self) -> list[Served]:
        """The phase's events as replayed from ``last_event_id=0`` (those after ``after``)."""
        return [s for s in self.replay if s.id.isdigit() and int(s.id) > self.after]


@dataclass
class Report:
    beat: str
    first: Phase
    restarted: Phase
    log: str = ""


class Upstream(Protocol):
    """A beat and the real thing it reads from, as the scenario drives them."""

    name: str
    queues_while_down: bool
    """The upstream keeps what is sent while the beat is down (MQTT session, OpenCTI stream)."""
    corpus: Corpus

    def beat_args(self, port: int) -> list[str]:
        """``beats`` arguments, without ``--port`` and ``--data-dir`` (``port`` is the beat's)."""

    def serving(self, workdir: Path) -> contextlib.AbstractAsyncContextManager[None]: ...

    def inputs(self, phase: int) -> list[Input]:
        """Phase 2: the corpus's redelivered inputs; any other phase its inputs (their keys
        made unique by the phase number); normal inputs interleaved."""

    def probe(self) -> Input:
        """A fresh normal input, to learn whether the beat can still commit."""

    async def send(self, item: Input) -> None:
        """Deliver one input; record an HTTP answer in ``item.status``, a transport
        observation in ``item.note``."""

    def owns(self, item: Input, event: dict[str, Any]) -> bool:
        """Whether a committed (not dead-letter) event came from ``item``."""

    def dead_letter_key(self, data: dict[str, Any]) -> str | None:
        """The input key a dead letter's ``data.context`` names, ``None`` when it names none."""

    def lossless(self, item: Input, events: list[dict[str, Any]]) -> str | None:
        """``None`` when ``events`` keep ``item`` losslessly; else what they lost."""


def interleave(hostile: list[Input], normal: Callable[[int], Input]) -> list[Input]:
    """A normal input before each hostile one and one after the last (the phase's sentinel)."""
    mixed: list[Input] = []
    for index, item in enumerate(hostile):
        mixed += [normal(index), item]
    mixed.append(normal(len(hostile)))
    return mixed


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in bytes, from ``/proc/<pid>/status``."""
    status = Path(f"/proc/{pid}/status").read_text()
    values = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
    return int(values["VmRSS"]) * 1024, int(values["VmHWM"]) * 1024


class Consumer:
    """A live SSE client of ``/events`` from sequence 0, resuming after a beat restart."""

    def __init__(self) -> None:
        self.served: list[Served] = []
        self.base = ""
        self.arrived = asyncio.Event()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as client:
            while True:
                last = next((s.id for s in reversed(self.served) if s.id), "0")
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    url = f"{self.base}/events"
                    headers = {"Last-Event-ID": last}
                    async with aconnect_sse(client, "GET", url, headers=headers) as source:
                        async for sse in source.aiter_sse():
                            if sse.data:
                                self.served.append(Served.of(sse.id, sse.event, sse.data))
                                self.arrived.set()
                await asyncio.sleep(0.2)

    async def wait(self, found: Callable[[list[Served]], bool], timeout: float) -> bool:
        """Until ``found`` holds, or ``timeout`` passes, or nothing arrives for a while."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not found(self.served):
                    self.arrived.clear()
                    await asyncio.wait_for(self.arrived.wait(), IDLE_SECONDS)
                return True
        return False


async def _readyz(base: str) -> tuple[int, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        try:
            response = await client.get(f"{base}/readyz")
        except httpx.HTTPError as exc:
            return 0, f"{type(exc).__name__}: {exc}"
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text


async def _replay(url: str, count: int) -> list[Served]:
    """Up to ``count`` messages of ``url?last_event_id=0`` (fewer if it has fewer in 30 s)."""
    served: list[Served] = []
    if count <= 0:
        return served
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with (
            asyncio.timeout(30),
            httpx.AsyncClient(timeout=30) as client,
            aconnect_sse(client, "GET", f"{url}?last_event_id=0") as source,
        ):
            async for sse in source.aiter_sse():
                if sse.data:
                    served.append(Served.of(sse.id, sse.event, sse.data))
                    if len(served) >= count:
                        break
    return served


async def _metrics(base: str) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        with contextlib.suppress(httpx.HTTPError):
            return (await client.get(f"{base}/metrics")).text
    return ""


def commits_of(upstream: Upstream, item: Input) -> Callable[[list[Served]], bool]:
    def found(served: list[Served]) -> bool:
        return any(
            s.event is not None and not s.dead_letter and upstream.owns(item, s.event)
            for s in served
        )

    return found


async def _play(
    upstream: Upstream, process: ServiceProcess, consumer: Consumer, phase: Phase, *, send: bool
) -> None:
    """Send the phase's inputs (unless already sent), then wait for the last one; then a probe
    (one more normal input) says whether the beat can still commit at all."""
    if send:
        for item in phase.inputs:
            await upstream.send(item)
    sentinel = phase.inputs[-1]
    phase.settled = await consumer.wait(commits_of(upstream, sentinel), SETTLE_SECONDS)
    phase.can_commit = phase.settled
    if not phase.settled:
        probe = upstream.probe()
        await upstream.send(probe)
        phase.can_commit = await consumer.wait(commits_of(upstream, probe), IDLE_SECONDS)
    await observe(process, consumer, phase)


async def observe(process: ServiceProcess, consumer: Consumer, phase: Phase) -> None:
    """What the beat says and serves now: readiness, metrics, the replay, its memory."""
    phase.readyz = await _readyz(process.base)
    report = phase.readyz[1]
    phase.head = int(report["log"]["head"]) if isinstance(report, dict) else -1
    phase.metrics = await _metrics(process.base)
    phase.live = list(consumer.served)
    phase.replay = await _replay(f"{process.base}/events", phase.head)
    dead = sum(s.dead_letter for s in phase.replay)
    deadletter = await _replay(f"{process.base}/events/deadletter", dead)
    phase.dead_letter_channel = [s.id for s in deadletter]
    assert process.process is not None
    phase.alive = process.process.poll() is None
    if phase.alive:
        phase.rss_peak = memory(process.process.pid)[1]


async def start_beat(process: ServiceProcess, phase: Phase) -> bool:
    try:
        await asyncio.to_thread(process.start)
    except RuntimeError as exc:
        phase.start_error = str(exc)[-1500:]
        return False
    assert process.process is not None
    phase.rss_start = memory(process.process.pid)[0]
    return True


async def run_scenario(upstream: Upstream, workdir: Path) -> Report:
    """Phase 1: every input, live. Then kill -9; phase 2: the redelivered inputs, sent while
    the beat is down when the upstream keeps them, else after the restart on the same data."""
    first, restarted = Phase(upstream.inputs(1)), Phase(upstream.inputs(2))
    consumer = Consumer()
    log = workdir / "beat.log"
    async with upstream.serving(workdir), background(consumer.run()):
        port = free_port()
        args = [*upstream.beat_args(port), "--data-dir", str(workdir / "data")]
        process = ServiceProcess(args, port=port, log=log)
        consumer.base = process.base
        try:
            if await start_beat(process, first):
                await _play(upstream, process, consumer, first, send=True)
            process.stop()
            restarted.after = max(first.head, 0)
            if upstream.queues_while_down:
                for item in restarted.inputs:
                    await upstream.send(item)
            if await start_beat(process, restarted):
                await _play(
                    upstream, process, consumer, restarted, send=not upstream.queues_while_down
                )
        finally:
            process.stop()
    return Report(upstream.name, first, restarted, log.read_text(errors="replace"))


@contextlib.asynccontextmanager
async def background(coroutine: Any) -> AsyncIterator[None]:
    task = asyncio.create_task(coroutine, name="hostile:sse-consumer")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
