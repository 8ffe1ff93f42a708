"""Benchmark: MQTT → HiveMQ beat → log → SSE and Kafka, against same-run baselines.

Throughput: N JSON messages are pushed into a private Mosquitto by ``mosquitto_pub -l`` (C, one
connection, QoS 1), which is faster than everything measured here. We time, from the first
publish, how long it takes until

* the beat's SSE stream delivered all N (and none is missing),
* the beat's Kafka forwarder had all N acknowledged by the broker (lag 0),

and compare with two baselines measured in the same run on the same brokers:

* a bare aiomqtt subscriber (MQTT 5, QoS 1, like the beat) receiving the same N messages
  (the MQTT ceiling for Python), and
* a bare aiokafka producer sending N records of the same size (the Kafka ceiling).

Latency: a Python publisher sends at a fixed rate with its send time in the payload; the SSE
client records ``receive - send``; the bare aiomqtt subscriber does the same for the baseline.

The beat runs as its own process (``python -m beats run hivemq``), as in production.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
from aiokafka import AIOKafkaProducer
from httpx_sse import aconnect_sse

from bench.profiling import flame
from tests.brokers import KafkaBroker, MosquittoBroker
from tests.processes import ServiceProcess
from tests.support import free_port

__all__ = ["run"]

PAYLOAD_PAD = "x" * 200


def _lines(count: int, tag: str) -> bytes:
    return b"".join(
        json.dumps({"n": n, "tag": tag, "pad": PAYLOAD_PAD}).encode() + b"\n" for n in range(count)
    )


def _blast(broker: MosquittoBroker, topic: str, count: int, tag: str) -> float:
    """Publish ``count`` lines with mosquitto_pub -l; returns the start time."""
    binary = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
    started = time.perf_counter()
    subprocess.run(
        [binary, "-p", str(broker.port), "-t", topic, "-q", "1", "-l"],
        input=_lines(count, tag),
        check=True,
    )
    return started


def _protocol(version: str) -> aiomqtt.ProtocolVersion:
    return aiomqtt.ProtocolVersion.V5 if version == "5" else aiomqtt.ProtocolVersion.V311


async def _bare_subscriber(broker: MosquittoBroker, count: int, version: str) -> float:
    """Messages per second a bare aiomqtt subscriber receives."""
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, identifier="bench-bare", protocol=_protocol(version)
    ) as client:
        await client.subscribe("bench/bare", qos=1)
        blaster = asyncio.create_task(asyncio.to_thread(_blast, broker, "bench/bare", count, "b"))
        received = 0
        async for _ in client.messages:
            received += 1
            if received == count:
                break
        started = await blaster
    return count / (time.perf_counter() - started)


async def _bare_producer(kafka: KafkaBroker, count: int) -> float:
    """Records per second a bare aiokafka producer gets acknowledged (acks=all)."""
    value = json.dumps({"n": 0, "tag": "k", "pad": PAYLOAD_PAD}).encode() * 2  # ~ event size
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [await producer.send("bench.bare", value, key=b"k") for _ in range(count)]
        await asyncio.gather(*futures)
        return count / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def _sse_count(base: str, count: int, *, after: int) -> float:
    """Time at which the SSE stream delivered ``count`` events after ``after``."""
    seen: set[int] = set()
    async with (
        httpx.AsyncClient(timeout=120) as client,
        aconnect_sse(client, "GET", f"{base}/events?last_event_id={after}") as source,
    ):
        async for sse in source.aiter_sse():
            if sse.event != "beats.hivemq.message":
                continue
            seen.add(json.loads(sse.data)["data"]["n"])
            if len(seen) == count:
                return time.perf_counter()
    raise RuntimeError("stream ended early")


async def _kafka_caught_up(base: str, target: int) -> float:
    async with httpx.AsyncClient() as client:
        while True:
            report = (await client.get(f"{base}/readyz")).json()
            if report["log"]["head"] >= target and report["kafka"]["lag"] == 0:
                return time.perf_counter()
            await asyncio.sleep(0.02)


async def _beat_throughput(base: str, broker: MosquittoBroker, count: int) -> dict[str, float]:
    async with httpx.AsyncClient() as client:
        head = int((await client.get(f"{base}/readyz")).json()["log"]["head"])
    sse = asyncio.create_task(_sse_count(base, count, after=head))
    await asyncio.sleep(0.3)
    kafka = asyncio.create_task(_kafka_caught_up(base, head + count))
    started = await asyncio.to_thread(_blast, broker, "bench/beat", count, "t")
    sse_done, kafka_done = await sse, await kafka
    return {
        "sse_per_s": count / (sse_done - started),
        "kafka_per_s": count / (kafka_done - started),
    }


async def _latency(
    base: str | None, broker: MosquittoBroker, *, rate: int, seconds: float
) -> list[float]:
    """Publish→receive latencies (ms), through the beat's SSE or, with ``base`` None, bare."""
    total = int(rate * seconds)
    latencies: list[float] = []
    done = asyncio.Event()

    def record(payload: dict[str, Any]) -> None:
        latencies.append((time.time_ns() - payload["sent"]) / 1e6)
        if len(latencies) >= total:
            done.set()

    reader = asyncio.create_task(_read_latency(base, broker, record, done))
    await asyncio.sleep(0.5)
    topic = "bench/beat" if base else "bench/lat"
    async with aiomqtt.Client("127.0.0.1", broker.port) as publisher:
        for n in range(total):
            payload = json.dumps({"n": n, "sent": time.time_ns(), "pad": PAYLOAD_PAD})
            await publisher.publish(topic, payload, qos=1)
            await asyncio.sleep(1 / rate)
    await asyncio.wait_for(done.wait(), 60)
    reader.cancel()
    return latencies


async def _read_latency(
    base: str | None, broker: MosquittoBroker, record: Any, done: asyncio.Event
) -> None:
    if base is None:
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, identifier="bench-lat", protocol=_protocol("5")
        ) as mqtt:
            await mqtt.subscribe("bench/lat", qos=1)
            async for message in mqtt.messages:
                assert isinstance(message.payload, bytes)
                record(json.loads(message.payload))
        return
    async with (
        httpx.AsyncClient(timeout=120) as client,
        aconnect_sse(client, "GET", f"{base}/events") as source,
    ):
        async for sse in source.aiter_sse():
            if sse.event == "beats.hivemq.message":
                record(json.loads(sse.data)["data"])


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1], 2),
    }


async def run(
    *, count: int = 20000, version: str = "5", rate: int = 1000, seconds: float = 5.0
) -> dict[str, Any]:
    """One full comparison; the beat and the bare subscriber speak MQTT ``version``."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    (workdir / "mqtt").mkdir()
    (workdir / "kafka").mkdir()
    mqtt, kafka = MosquittoBroker(workdir / "mqtt"), KafkaBroker(workdir / "kafka")
    mqtt.start()
    kafka.start()
    beat = ServiceProcess(
        [
            "run",
            "hivemq",
            "--mqtt-url",
            mqtt.url,
            "--mqtt-topic",
            "bench/beat",
            "--data-dir",
            str(workdir / "beat"),
            "--kafka-bootstrap",
            kafka.bootstrap,
            "--no-kafka-idempotence",
            "--log-level",
            "warning",
            "--sse-queue-size",
            "100000",
            "--mqtt-version",
            version,
        ],
        port=free_port(),
        log=workdir / "beat.log",
    )
    try:
        bare_mqtt = await _bare_subscriber(mqtt, count, version)
        bare_kafka = await _bare_producer(kafka, count)
        beat.start()
        with flame(beat.pid, f"mqtt_path_v{version}"):
            through = await _beat_throughput(beat.base, mqtt, count)
        bare_latency = _percentiles(await _latency(None, mqtt, rate=rate, seconds=seconds))
        beat_latency = _percentiles(await _latency(beat.base, mqtt, rate=rate, seconds=seconds))
    finally:
        beat.stop()
        mqtt.kill()
        kafka.kill()
    floor = min(bare_mqtt, bare_kafka)
    return {
        "mqtt_version": version,
        "messages": count,
        "baseline_bare_aiomqtt_per_s": round(bare_mqtt),
        "baseline_bare_aiokafka_per_s": round(bare_kafka),
        "beat_sse_per_s": round(through["sse_per_s"]),
        "beat_kafka_per_s": round(through["kafka_per_s"]),
        "ratio_sse_to_lower_baseline": round(through["sse_per_s"] / floor, 3),
        "ratio_kafka_to_lower_baseline": round(through["kafka_per_s"] / floor, 3),
        "latency_rate_per_s": rate,
        "latency_bare_aiomqtt": bare_latency,
        "latency_beat_sse": beat_latency,
    }
