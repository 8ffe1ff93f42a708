"""Benchmark: SSE fan-out through the gateway, against the same clients reading the beat directly.

Set-up (every service its own process, as in production): a private Mosquitto, the HiveMQ beat,
the gateway fronting it. A publisher sends ``rate`` MQTT messages per second carrying their send
time; ``clients`` SSE clients (raw sockets, so the client side costs as little as possible) read
the feed and record ``receive - send`` for every event.

* **loaded**: the same clients and rate twice — first straight from the beat's ``/events`` (the
  baseline: the beat's own hub), then through the gateway's ``/streams/hivemq`` (one upstream
  connection to the beat, fanned out by the gateway). Reported: delivered fraction, p50/p99
  latency, the serving process's CPU (ms per client per second) and memory per client; ratios
  are baseline / gateway (1.0 = the gateway costs nothing over reading the beat).
* **idle**: ``idle`` connections held open on the gateway with no traffic: its memory per
  connection and the connections that fit in a GiB, against the beat holding as many.

Client, beat, gateway and broker share the machine's cores, so latency includes the client's
own CPU time; both phases pay it alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from tests.brokers import MosquittoBroker
from tests.processes import ServiceProcess
from tests.support import free_port

__all__ = ["run"]

_SENT = re.compile(rb'"sent": ?([0-9.]+)')
_PAGE = resource.getpagesize()


@dataclass
class _Client:
    latencies: list[float] = field(default_factory=list)
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None


def _raise_fd_limit() -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the services
    return hard


def _rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, in clock ticks


async def _connect(port: int, path: str) -> _Client:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    status = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n", 1)[0]
    if b" 200 " not in status:
        raise RuntimeError(f"{path}: {status.decode()}")
    return _Client(reader=reader, writer=writer)


async def _connect_all(port: int, path: str, count: int) -> list[_Client]:
    gate = asyncio.Semaphore(200)

    async def one() -> _Client:
        async with gate:
            return await _connect(port, path)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def _read(client: _Client) -> None:
    assert client.reader is not None
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while chunk := await client.reader.read(65536):
            now = time.time()
            client.latencies.extend(now - float(sent) for sent in _SENT.findall(chunk))


def _close(clients: list[_Client]) -> None:
    for client in clients:
        if client.writer is not None:
            client.writer.close()


async def _publish(mqtt_port: int, *, rate: float, seconds: float) -> int:
    sent = 0
    async with aiomqtt.Client("127.0.0.1", mqtt_port, identifier="bench-fanout-pub") as mqtt:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while (due := start + sent / rate) < start + seconds:
            await asyncio.sleep(max(0.0, due - loop.time()))
            payload = json.dumps({"sent": time.time(), "n": sent})
            await mqtt.publish("bench/fanout", payload, qos=1)
            sent += 1
    return sent


async def _loaded(
    server: ServiceProcess, path: str, mqtt_port: int, *, clients: int, rate: float, seconds: float
) -> dict[str, float]:
    assert server.process is not None
    pid = server.process.pid
    connected = await _connect_all(server.port, path, clients)
    readers = [asyncio.create_task(_read(c)) for c in connected]
    rss, cpu = _rss(pid), _cpu_seconds(pid)
    sent = await _publish(mqtt_port, rate=rate, seconds=seconds)
    cpu = _cpu_seconds(pid) - cpu
    await asyncio.sleep(2.0)  # drain
    rss = _rss(pid)
    _close(connected)
    await asyncio.gather(*readers)
    latencies = sorted(x for c in connected for x in c.latencies)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "clients": clients,
        "rate": rate,
        "published": sent,
        "delivered": len(latencies) / (sent * clients),
        "p50_ms": round(quantiles[49] * 1000, 2),
        "p99_ms": round(quantiles[98] * 1000, 2),
        "cpu_ms_per_client_s": round(cpu * 1000 / seconds / clients, 4),
        "rss_mib": round(rss / 2**20, 1),
    }


async def _idle(server: ServiceProcess, path: str, count: int) -> dict[str, float]:
    assert server.process is not None
    pid = server.process.pid
    before = _rss(pid)
    held = await _connect_all(server.port, path, count)
    await asyncio.sleep(3.0)
    per = max(1, _rss(pid) - before) / count
    _close(held)
    await asyncio.sleep(1.0)
    return {
        "connections": count,
        "kib_per_connection": round(per / 1024, 2),
        "connections_per_gib": int(2**30 / per),
    }


def _ratios(beat: dict[str, float], gateway: dict[str, float]) -> dict[str, float]:
    return {
        "ratio_p99": round(beat["p99_ms"] / max(gateway["p99_ms"], 1e-6), 3),
        "ratio_delivered": round(gateway["delivered"] / max(beat["delivered"], 1e-9), 3),
        "ratio_cpu": round(
            beat["cpu_ms_per_client_s"] / max(gateway["cpu_ms_per_client_s"], 1e-9), 3
        ),
    }


async def run(
    *, clients: int = 1000, rate: float = 50.0, seconds: float = 10.0, idle: int = 10_000
) -> dict[str, Any]:
    limit = _raise_fd_limit()
    idle = min(idle, limit - 1000)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "mqtt").mkdir()
        broker = MosquittoBroker(Path(tmp) / "mqtt")
        broker.start()
        beat = ServiceProcess(
            ["run", "hivemq", "--mqtt-url", broker.url,
             "--mqtt-topic", "bench/#", "--data-dir", f"{tmp}/beat", "--log-level", "warning"],
            port=free_port(), log=Path(tmp) / "beat.log",
        )  # fmt: skip
        gateway = ServiceProcess(
            ["run", "gateway", "--beat", f"hivemq={beat.base}", "--max-streams", "50000",
             "--upstream-linger", "0", "--log-level", "warning"],
            port=free_port(), log=Path(tmp) / "gateway.log",
        )  # fmt: skip
        try:
            beat.start()
            gateway.start()
            direct = await _loaded(beat, "/events", broker.port, clients=clients, rate=rate,
                                   seconds=seconds)  # fmt: skip
            fronted = await _loaded(gateway, "/streams/hivemq", broker.port, clients=clients,
                                    rate=rate, seconds=seconds)  # fmt: skip
            idle_gateway = await _idle(gateway, "/streams/hivemq", idle)
            idle_beat = await _idle(beat, "/events", idle)
        finally:
            gateway.stop()
            beat.stop()
            broker.stop()
    return {
        "loaded": {"beat": direct, "gateway": fronted, **_ratios(direct, fronted)},
        "idle": {
            "beat": idle_beat,
            "gateway": idle_gateway,
            "ratio_memory": round(
                idle_beat["kib_per_connection"] / max(idle_gateway["kib_per_connection"], 1e-9), 3
            ),
        },
        "targets": {
            "p99_le_100ms_at_1000x50": clients >= 1000 and rate >= 50 and fronted["p99_ms"] <= 100,
            "idle_le_30kib_at_10000": idle >= 10_000 and idle_gateway["kib_per_connection"] <= 30,
        },
    }
