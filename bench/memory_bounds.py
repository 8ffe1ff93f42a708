"""Benchmark: memory of a beat and of the gateway under stalled readers of large events.

Set-up (every service its own process, default options): a private Mosquitto, a tansu
Kafka-protocol broker, the HiveMQ beat (forwarding to Kafka), and the gateway fronting it.

1. **Load**: two thirds of ``events`` MQTT messages of 1 MiB (minus 2 KiB, so that each event's
   record fits Kafka's default 1 MiB request) are published in a burst, committed and forwarded
   to Kafka. The beat is then restarted: a fresh process over a log of large events, as in the
   attack this measures.
2. **Stall**: ``readers`` raw-socket clients ask the beat for ``/events?last_event_id=0`` and
   ``gateway_readers`` ask the gateway for ``/streams/hivemq?last_event_id=0``; each has a
   4 KiB receive buffer and never reads. ``--sse-send-timeout`` is 600 s, so the services keep
   them for the whole measurement (the worst case). Meanwhile the remaining events arrive one
   by one (live traffic into the hub's buffers, the gateway's ring and the Kafka forwarder).
3. Each process's peak resident memory during the stall (``VmHWM``, reset through
   ``/proc/<pid>/clear_refs`` when the readers come) is compared with its ``VmRSS`` when idle.

Reported per process: idle RSS, peak RSS, the growth (peak - idle) and ``ratio_budget`` =
256 MiB / growth (the aim is a growth under 256 MiB: the ratio must stay above 1). The load
phase reports the beat's own growth while it ingests the burst, for context. Afterwards a reader
that does read gets every event from the beat and from the gateway (nothing lost), and Kafka's
lag is 0 (nothing stuck).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
import httpx

from tests.brokers import KafkaBroker, MosquittoBroker
from tests.processes import ServiceProcess
from tests.support import free_port, stalled_socket

__all__ = ["run"]

MIB = 1 << 20
BUDGET = 256 * MIB
_PAYLOAD = MIB - 2048
_ID = re.compile(rb"^id: (\d+)$", re.MULTILINE)


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _pid(service: ServiceProcess) -> int:
    assert service.process is not None
    return service.process.pid


def _each(beat: ServiceProcess, gateway: ServiceProcess, field: str) -> dict[str, int]:
    return {"beat": _status(_pid(beat), field), "gateway": _status(_pid(gateway), field)}


def _payload(n: int) -> bytes:
    head = json.dumps({"n": n, "pad": ""}).encode()[:-2]
    return head + b"x" * (_PAYLOAD - len(head) - 2) + b'"}'


async def _publish(port: int, numbers: range) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-mem-{numbers.start}") as mqtt:
        for n in numbers:
            await mqtt.publish("bench/memory", _payload(n), qos=1)


async def _metrics(http: httpx.AsyncClient, base: str) -> dict[str, float]:
    text = (await http.get(f"{base}/metrics")).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "_created" not in line:
            name, _, value = line.rpartition(" ")
            values[name] = values.get(name, 0.0) + float(value)
    return values


async def _wait(check: Any, *, timeout: float, what: str) -> None:
    """Until ``await check()`` is true; a service too busy to answer is asked again."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            if await check():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.25)


async def _read_ids(url: str, count: int) -> list[int]:
    """The ids of ``count`` events read (and parsed) from an SSE ``url`` (fewer if the
    service does not send them within 5 minutes)."""
    ids: list[int] = []
    buffer = b""
    with contextlib.suppress(TimeoutError):
        async with (
            asyncio.timeout(300),
            httpx.AsyncClient(timeout=120) as http,
            http.stream("GET", url, headers={"Accept": "text/event-stream"}) as response,
        ):
            async for chunk in response.aiter_bytes():
                buffer += chunk
                *messages, buffer = buffer.split(b"\n\n")
                ids.extend(int(m) for message in messages for m in _ID.findall(message))
                if len(ids) >= count:
                    break
    return ids


def _figures(idle: int, peak: int) -> dict[str, float]:
    growth = peak - idle
    return {
        "idle_rss_mib": round(idle / MIB, 1),
        "peak_rss_mib": round(peak / MIB, 1),
        "growth_mib": round(growth / MIB, 1),
        "ratio_budget": round(BUDGET / max(growth, 1), 2),
    }


class _Stack:
    """Mosquitto, tansu, the HiveMQ beat (Kafka on) and the gateway, as processes."""

    def __init__(self, tmp: Path) -> None:
        (tmp / "mqtt").mkdir()
        (tmp / "kafka").mkdir()
        self.broker, self.kafka = MosquittoBroker(tmp / "mqtt"), KafkaBroker(tmp / "kafka")
        self.beat = ServiceProcess(
            ["run", "hivemq", "--mqtt-url", self.broker.url, "--mqtt-topic", "bench/#",
             "--data-dir", f"{tmp}/beat", "--kafka-bootstrap", self.kafka.bootstrap,
             "--no-kafka-idempotence", "--sse-send-timeout", "600", "--log-level", "warning"],
            port=free_port(), log=tmp / "beat.log",
        )  # fmt: skip
        self.gateway = ServiceProcess(
            ["run", "gateway", "--beat", f"hivemq={self.beat.base}", "--sse-send-timeout", "600",
             "--log-level", "warning"],
            port=free_port(), log=tmp / "gateway.log",
        )  # fmt: skip

    def stop(self) -> None:
        for service in (self.gateway, self.beat):
            service.stop()
        self.kafka.stop()
        self.broker.stop()

    async def head(self, http: httpx.AsyncClient) -> int:
        return int((await http.get(f"{self.beat.base}/readyz")).json()["log"]["head"])

    async def kafka_lag(self, http: httpx.AsyncClient) -> float:
        return (await _metrics(http, self.beat.base)).get("beats_kafka_lag", -1.0)


async def _load(stack: _Stack, count: int) -> dict[str, float]:
    """A burst of ``count`` events into a fresh beat, until committed and in Kafka."""
    pid = _pid(stack.beat)
    idle = _status(pid, "VmRSS")
    started = time.monotonic()
    await _publish(stack.broker.port, range(count))
    async with httpx.AsyncClient(timeout=10) as http:
        await _wait(lambda: _ge(stack.head(http), count), timeout=180, what="the ingest")
        committed = time.monotonic() - started
        await _wait(lambda: _ge(stack.kafka_lag(http), 0, exact=True), timeout=180, what="Kafka")
    return {
        "events": count,
        "committed_s": round(committed, 1),
        "beat_growth_mib": round((_status(pid, "VmHWM") - idle) / MIB, 1),
    }


async def _stall(
    stack: _Stack, *, readers: int, gateway_readers: int, live: range, hold: float,
    ceiling: int,
) -> tuple[dict[str, int], dict[str, Any]]:  # fmt: skip
    """Stalled readers while ``live`` events arrive one by one; each process's peak RSS."""
    pids = {"beat": _pid(stack.beat), "gateway": _pid(stack.gateway)}
    for pid in pids.values():
        _reset_peak(pid)
    held = [stalled_socket(stack.beat.port, "/events?last_event_id=0") for _ in range(readers)]
    held += [
        stalled_socket(stack.gateway.port, "/streams/hivemq?last_event_id=0")
        for _ in range(gateway_readers)
    ]
    watchdog = asyncio.create_task(_watch(pids, ceiling))
    feed = asyncio.create_task(_feed(stack, live))
    try:
        await asyncio.wait({watchdog, feed}, return_when=asyncio.FIRST_COMPLETED)
        if not watchdog.done():
            feed.result()
            await asyncio.wait({watchdog}, timeout=hold)
        if watchdog.done():
            killed = watchdog.result()
            peaks = {name: killed.get(name) or _status(pid, "VmHWM") for name, pid in pids.items()}
            return peaks, {"ceiling_hit": sorted(killed)}
        async with httpx.AsyncClient(timeout=60) as http:
            state = await _state(stack, http)
        return {name: _status(pid, "VmHWM") for name, pid in pids.items()}, state
    finally:
        for task in (watchdog, feed):
            task.cancel()
        for sock in held:
            sock.close()


async def _feed(stack: _Stack, live: range) -> None:
    """The live events, one by one: the MQTT path holds one event at a time."""
    await asyncio.sleep(2.0)
    async with httpx.AsyncClient(timeout=60) as http:
        for n in live:
            await _publish(stack.broker.port, range(n, n + 1))
            committed = lambda head=n + 1: _ge(stack.head(http), head)  # noqa: E731
            await _wait(committed, timeout=120, what="a commit")


async def _watch(pids: dict[str, int], ceiling: int) -> dict[str, int]:
    """Kill every process that passes ``ceiling`` (an unbounded build must not exhaust a shared
    machine); returns their peak RSS, once one was killed."""
    killed: dict[str, int] = {}
    while not killed:
        for name, pid in pids.items():
            if _status(pid, "VmRSS") > ceiling:
                killed[name] = _status(pid, "VmHWM")
                os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.1)
    return killed


async def _state(stack: _Stack, http: httpx.AsyncClient) -> dict[str, Any]:
    beat = await _metrics(http, stack.beat.base)
    gateway = await _metrics(http, stack.gateway.base)
    ready = (await http.get(f"{stack.beat.base}/readyz")).json()
    return {
        "beat_sse_subscribers": ready["sse"]["subscribers"],
        "gateway_streams": (await http.get(f"{stack.gateway.base}/readyz")).json()["streams"],
        "beat_overflow_disconnects": beat.get("beats_sse_overflow_disconnects_total", 0.0),
        "gateway_overflow_disconnects": gateway.get(
            "beats_gateway_overflow_disconnects_total", 0.0
        ),
    }


async def run(
    *, events: int = 300, readers: int = 6, gateway_readers: int = 3, hold: float = 15.0,
    ceiling_mib: int = 4096,
) -> dict[str, Any]:  # fmt: skip
    """See the module docstring. ``ceiling_mib``: a process passing it is killed and the run
    ends (``ceiling_hit``; its peak is then a lower bound), to keep an unbounded build from
    exhausting the machine."""
    before = events * 2 // 3
    with tempfile.TemporaryDirectory() as tmp:
        stack = _Stack(Path(tmp))
        try:
            stack.broker.start()
            stack.kafka.start()
            stack.beat.start()
            load = await _load(stack, before)
            stack.beat.terminate()
            stack.beat.start()  # a fresh process over the log, as in the attack
            stack.gateway.start()
            await asyncio.sleep(1.0)
            idle = _each(stack.beat, stack.gateway, "VmRSS")
            peaks, state = await _stall(
                stack, readers=readers, gateway_readers=gateway_readers,
                live=range(before, events), hold=hold, ceiling=ceiling_mib * MIB,
            )  # fmt: skip
            if "ceiling_hit" in state:
                check = {"skipped": "a process passed the ceiling and was killed"}
            else:
                check = await _check(stack, events)
        finally:
            stack.stop()
    return {
        "events": events,
        "event_bytes": _PAYLOAD,
        "beat_readers": readers,
        "gateway_readers": gateway_readers,
        "load": load,
        "beat": _figures(idle["beat"], peaks["beat"]),
        "gateway": _figures(idle["gateway"], peaks["gateway"]),
        "while_stalled": state,
        "after": check,
        "targets": {
            "growth_under_256_mib": all(peaks[p] - idle[p] < BUDGET for p in ("beat", "gateway"))
        },
    }


async def _ge(value: Any, bound: float, *, exact: bool = False) -> bool:
    result = await value
    return bool(result == bound if exact else result >= bound)


async def _check(stack: _Stack, events: int) -> dict[str, Any]:
    """Nothing lost, nothing stuck: every event from the beat and the gateway, Kafka lag 0."""
    from_beat = await _read_ids(f"{stack.beat.base}/events?last_event_id=0", events)
    gateway_url = f"{stack.gateway.base}/streams/hivemq?last_event_id=0"
    from_gateway = await _read_ids(gateway_url, events)
    async with httpx.AsyncClient(timeout=10) as http:
        with contextlib.suppress(RuntimeError):
            await _wait(lambda: _ge(stack.kafka_lag(http), 0, exact=True), timeout=60, what="")
        metrics = await _metrics(http, stack.beat.base)
    expected = list(range(1, events + 1))
    return {
        "beat_replay_complete": from_beat[:events] == expected,
        "gateway_replay_complete": from_gateway[:events] == expected,
        "kafka_lag": metrics.get("beats_kafka_lag", -1.0),
    }
