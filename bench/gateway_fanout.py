"""Benchmark: SSE fan-out through the gateway, against the same clients reading the beat directly.

Set-up (every service its own process, as in production): a private Mosquitto, the HiveMQ beat,
the gateway fronting it. A publisher sends ``rate`` MQTT messages per second carrying their send
time; ``clients`` SSE clients (raw sockets, in one process of their own:
``bench/sse_clients.py``) read the feed and record ``receive - send`` for every event.

* **loaded**: the same clients and rate three times — from the bare stack
  (``bench/bare_broadcast.py``: an aiomqtt subscriber of the same topic, one ``asyncio.Queue``
  per client, sse-starlette; the floor of the latency), straight from the beat's ``/events`` (the
  beat's own hub), then through the gateway's ``/streams/hivemq`` (one upstream connection to the
  beat, fanned out by the gateway). Reported: delivered fraction, p50/p99 latency, the serving
  process's CPU (ms per client per second) and memory per client; ``ratio_*`` are beat / gateway
  (1.0 = the gateway costs nothing over reading the beat), and ``ratio_p99_gateway_to_bare`` the
  gateway's p99 over the bare stack's (lower is better; the aim: ≤ 1.2).
* **idle**: ``idle`` connections held open on the gateway with no traffic: its memory per
  connection and the connections that fit in a GiB, against the beat holding as many.

Clients, beat, gateway and broker share the machine's cores, so latency includes the clients'
own CPU time; every phase pays it alike.
"""

from __future__ import annotations

import asyncio
import json
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt

from bench.profiling import flame
from bench.sse_clients import ClientProcess, close, connect_all
from tests.brokers import MosquittoBroker
from tests.processes import ServiceProcess
from tests.support import free_port

__all__ = ["run"]

_PAGE = resource.getpagesize()


def _raise_fd_limit() -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the services
    return hard


def _rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, in clock ticks


def _fanout_topic(n: int) -> str:
    return "bench/fanout"


async def publish(
    mqtt_port: int, *, rate: float, seconds: float, topic: Callable[[int], str] = _fanout_topic
) -> int:
    """Publish ``rate`` messages/s for ``seconds``, each with its send time; the count sent."""
    sent = 0
    async with aiomqtt.Client("127.0.0.1", mqtt_port, identifier="bench-pub") as mqtt:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while (due := start + sent / rate) < start + seconds:
            await asyncio.sleep(max(0.0, due - loop.time()))
            payload = json.dumps({"sent": time.time(), "n": sent})
            await mqtt.publish(topic(sent), payload, qos=1)
            sent += 1
    return sent


async def _loaded(
    server: ServiceProcess, path: str, mqtt_port: int, *, clients: int, rate: float, seconds: float
) -> dict[str, float]:
    pid = server.pid
    readers = ClientProcess(ports=[server.port], path=path, clients=clients)
    await readers.start()
    assert readers.process is not None
    rss, cpu, load_cpu = _rss(pid), _cpu_seconds(pid), _cpu_seconds(readers.process.pid)
    sent = await publish(mqtt_port, rate=rate, seconds=seconds)
    cpu = _cpu_seconds(pid) - cpu
    load_cpu = _cpu_seconds(readers.process.pid) - load_cpu
    await asyncio.sleep(2.0)  # drain
    rss = _rss(pid)
    received = await readers.stop()
    return {
        "clients": clients,
        "rate": rate,
        "published": sent,
        "delivered": received["events"] / (sent * clients),
        "p50_ms": received["p50_ms"],
        "p99_ms": received["p99_ms"],
        "cpu_ms_per_client_s": round(cpu * 1000 / seconds / clients, 4),
        "server_cpu_cores": round(cpu / seconds, 2),
        "clients_cpu_cores": round(load_cpu / seconds, 2),  # the load generator's process
        "rss_mib": round(rss / 2**20, 1),
    }


async def _idle(server: ServiceProcess, path: str, count: int) -> dict[str, float]:
    """Memory per idle connection: the growth of the server's RSS over the last 4/5 of
    ``count`` connections. The first fifth are not counted: they take the memory the loaded
    phase freed and the allocator kept, and made the figure look about half of what it is."""
    pid = server.pid
    warm = count // 5
    held = await connect_all(server.port, path, warm)
    await asyncio.sleep(1.0)
    before = _rss(pid)
    held += await connect_all(server.port, path, count - warm)
    await asyncio.sleep(3.0)
    per = max(1, _rss(pid) - before) / (count - warm)
    close(held)
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


def _services(tmp: str, broker: MosquittoBroker) -> tuple[ServiceProcess, ...]:
    """The beat, the gateway fronting it and the bare broadcaster (not started)."""
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
    bare = ServiceProcess(
        ["--mqtt-port", str(broker.port), "--topic", "bench/#"],
        port=free_port(), log=Path(tmp) / "bare.log", module="bench.bare_broadcast",
    )  # fmt: skip
    return beat, gateway, bare


async def _phases(
    beat: ServiceProcess, gateway: ServiceProcess, bare: ServiceProcess, mqtt_port: int,
    **options: Any,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """The loaded phases, the bare stack first (the baseline of the gateway's latency)."""
    phases: dict[str, dict[str, float]] = {}
    paths = [("bare", bare, "/events"), ("beat", beat, "/events")]
    for name, service, path in [*paths, ("gateway", gateway, "/streams/hivemq")]:
        with flame(service.pid, f"gateway_fanout_{name}"):
            phases[name] = await _loaded(service, path, mqtt_port, **options)
    return phases


async def run(
    *, clients: int = 1000, rate: float = 50.0, seconds: float = 10.0, idle: int = 10_000
) -> dict[str, Any]:
    limit = _raise_fd_limit()
    idle = min(idle, limit - 1000)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "mqtt").mkdir()
        broker = MosquittoBroker(Path(tmp) / "mqtt")
        broker.start()
        beat, gateway, bare = _services(tmp, broker)
        try:
            for service in (beat, gateway, bare):
                service.start()
            loaded = await _phases(
                beat, gateway, bare, broker.port, clients=clients, rate=rate, seconds=seconds
            )
            idle_gateway = await _idle(gateway, "/streams/hivemq", idle)
            idle_beat = await _idle(beat, "/events", idle)
        finally:
            for service in (bare, gateway, beat):
                service.stop()
            broker.stop()
    fronted = loaded["gateway"]
    return {
        "loaded": {
            **loaded,
            **_ratios(loaded["beat"], fronted),
            "ratio_p99_gateway_to_bare": round(
                fronted["p99_ms"] / max(loaded["bare"]["p99_ms"], 1e-6), 3
            ),
        },
        "idle": {
            "beat": idle_beat,
            "gateway": idle_gateway,
            "ratio_memory": round(
                idle_beat["kib_per_connection"] / max(idle_gateway["kib_per_connection"], 1e-9), 3
            ),
        },
        "targets": {
            "p99_le_100ms_at_1000x50": clients >= 1000 and rate >= 50 and fronted["p99_ms"] <= 100,
            "p99_le_1.2x_bare": loaded["bare"]["p99_ms"] > 0
            and fronted["p99_ms"] <= 1.2 * loaded["bare"]["p99_ms"],
            "idle_le_30kib_at_10000": idle >= 10_000 and idle_gateway["kib_per_connection"] <= 30,
        },
    }
