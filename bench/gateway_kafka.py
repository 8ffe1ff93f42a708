"""Benchmark: gateway replicas in Kafka mode against one gateway in URL mode, in the same run.

Set-up (every service its own process): a private Mosquitto, tansu (a Kafka-protocol broker), the
HiveMQ beat producing into a topic of ``partitions`` partitions (messages spread over six MQTT
topics, so over the partitions). A publisher sends ``rate`` messages per second carrying their
send time; ``clients`` SSE clients (raw sockets, in a process of their own:
``bench/sse_clients.py``) read ``/streams/hivemq`` and record ``receive - send`` for every
event. Phases, each with the same clients and rate:

* **url** (the baseline): one gateway reading the beat's SSE stream;
* **kafka_1**: one gateway in Kafka mode;
* **kafka_2**: two gateways in Kafka mode, half of the clients on each.
* **ingest**: ``backlog`` records produced as fast as a bare producer can while one live client
  reads them through a Kafka-mode gateway, then replayed to a client (``last_event_id=0``);
  the baseline is a bare aiokafka consumer parsing the same records: the rate one replica
  reads a beat's topics at.

Reported per phase: delivered fraction, p50/p99 latency (source to client: the Kafka phases
include the beat's forwarder and the broker), the gateways' CPU per delivered event and their
RSS; ratios are URL mode / Kafka mode (1.0: Kafka mode costs nothing more). **idle**: memory per
idle connection of a Kafka-mode gateway against a URL-mode one. ``docs/scaling.md`` extrapolates
from these figures.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.gateway_fanout import _cpu_seconds, _idle, _raise_fd_limit, publish
from bench.gateway_fanout import _rss as rss
from bench.sse_clients import Client, ClientProcess, close, connect_all
from common.envelope import new_event
from tests.brokers import KafkaBroker, MosquittoBroker
from tests.processes import ServiceProcess
from tests.support import free_port

__all__ = ["run"]

_TOPICS = 6


def _topic_of(n: int) -> str:
    return f"bench/kafka/{n % _TOPICS}"


async def _phase(
    gateways: list[ServiceProcess], mqtt_port: int, *, clients: int, rate: float, seconds: float
) -> dict[str, float]:
    """``clients`` spread evenly over ``gateways``, all reading while ``rate`` events/s flow."""
    share = clients // len(gateways)
    readers = ClientProcess(ports=[g.port for g in gateways], path="/streams/hivemq", clients=share)
    await readers.start()
    pids = [g.pid for g in gateways]
    cpu = sum(_cpu_seconds(pid) for pid in pids)
    sent = await publish(mqtt_port, rate=rate, seconds=seconds, topic=_topic_of)
    await asyncio.sleep(3.0)  # drain (Kafka mode: the forwarder's last batch and a fetch)
    cpu = sum(_cpu_seconds(pid) for pid in pids) - cpu
    memory = sum(rss(pid) for pid in pids)
    received = await readers.stop()
    delivered = received["events"]
    return {
        "replicas": len(gateways),
        "clients": share * len(gateways),
        "rate": rate,
        "published": sent,
        "delivered": round(delivered / max(1, sent * share * len(gateways)), 4),
        "p50_ms": received["p50_ms"],
        "p99_ms": received["p99_ms"],
        "cpu_us_per_delivered_event": round(cpu * 1e6 / max(1, delivered), 2),
        "deliveries_per_cpu_second": int(delivered / max(cpu, 1e-6)),
        "rss_mib": round(memory / 2**20, 1),
    }


async def _topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 3, 1)])
    finally:
        await admin.close()


def _records(count: int) -> list[tuple[bytes, bytes]]:
    """``count`` structured CloudEvents of about 300 bytes (key, value), as a beat makes them."""
    records = []
    for n in range(count):
        key = f"bench/{n % 12}"
        event = new_event(
            beat="hivemq", type="beats.hivemq.message", source="mqtt://bench", channel="bulk",
            partitionkey=key, subject=key,
            data={"sent": 0.0, "n": n, "temperature": 21.5, "humidity": 40.1},
        )  # fmt: skip
        records.append((key.encode(), event.model_dump_json(exclude_none=True).encode()))
    return records


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def _bare_consumer(bootstrap: str, topic: str, count: int) -> float:
    """Seconds a bare consumer takes to read and parse ``count`` records of ``topic``."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        start, seen = time.perf_counter(), 0
        while seen < count:
            for records in (await consumer.getmany(timeout_ms=500, max_records=2000)).values():
                seen += sum(1 for r in records if json.loads(r.value or b"{}"))
        return time.perf_counter() - start
    finally:
        await consumer.stop()


async def _events(client: Client, count: int) -> int:
    """Read the client's stream until ``count`` events arrived (or it ends)."""
    assert client.reader is not None
    seen, tail, mark = 0, b"", b"\nevent: beats.hivemq.message\n"
    while seen < count and (chunk := await client.reader.read(1 << 20)):
        joined = tail + chunk  # a mark may straddle two reads
        seen += joined.count(mark)
        tail = joined[-(len(mark) - 1) :]
    return seen


async def _timed(pid: int, reading: Awaitable[int]) -> tuple[int, float, float]:
    """(events, seconds, CPU seconds of ``pid``) of ``reading``."""
    cpu, start = _cpu_seconds(pid), time.perf_counter()
    seen = await reading
    return seen, time.perf_counter() - start, _cpu_seconds(pid) - cpu


async def _ingest(gateway: ServiceProcess, bootstrap: str, count: int) -> dict[str, float]:
    """A live client while ``count`` records are produced as fast as a bare producer can,
    then a client replaying them all (``last_event_id=0``), against a bare consumer."""
    assert gateway.process is not None
    pid, topic, records = gateway.process.pid, "beats.hivemq.bulk", _records(count)
    await _topic(bootstrap, topic)
    await asyncio.sleep(3.0)  # the gateway finds the topic (metadata read every 2 s)
    (live,) = await connect_all(gateway.port, "/streams/hivemq/bulk", 1)
    await asyncio.sleep(1.0)  # its partitions assigned, at their end
    producing = asyncio.create_task(_produce(bootstrap, topic, records))
    live_seen, live_s, live_cpu = await _timed(pid, _events(live, count))
    await producing
    close([live])
    bare_s = await _bare_consumer(bootstrap, topic, count)
    (replay,) = await connect_all(gateway.port, "/streams/hivemq/bulk?last_event_id=0", 1)
    replay_seen, replay_s, replay_cpu = await _timed(pid, _events(replay, count))
    close([replay])
    return {
        "records": count,
        "bare_consumer_per_s": int(count / bare_s),
        "live_per_s": int(live_seen / live_s),
        "live_cpu_us_per_record": round(live_cpu * 1e6 / max(1, live_seen), 2),
        "replay_per_s": int(replay_seen / replay_s),
        "replay_cpu_us_per_record": round(replay_cpu * 1e6 / max(1, replay_seen), 2),
        "ratio_live": round(bare_s / live_s, 3),
        "ratio_replay": round(bare_s / replay_s, 3),
    }


def _gateway(tmp: str, name: str, beat: str, bootstrap: str | None) -> ServiceProcess:
    source = ["--beat", "hivemq"] if bootstrap else ["--beat", f"hivemq={beat}"]
    kafka = ["--kafka-bootstrap", bootstrap] if bootstrap else []
    return ServiceProcess(
        ["run", "gateway", *source, *kafka, "--max-streams", "50000", "--upstream-linger", "0",
         "--log-level", "warning"],
        port=free_port(), log=Path(tmp) / f"{name}.log",
    )  # fmt: skip


def _ratios(url: dict[str, float], kafka: dict[str, float]) -> dict[str, float]:
    return {
        "ratio_delivered": round(kafka["delivered"] / max(url["delivered"], 1e-9), 3),
        "ratio_p99": round(url["p99_ms"] / max(kafka["p99_ms"], 1e-6), 3),
        "ratio_cpu": round(
            url["cpu_us_per_delivered_event"] / max(kafka["cpu_us_per_delivered_event"], 1e-9), 3
        ),
    }


async def run(
    *, clients: int = 500, rate: float = 50.0, seconds: float = 10.0, idle: int = 2000,
    partitions: int = 3, backlog: int = 50_000,
) -> dict[str, Any]:  # fmt: skip
    idle = min(idle, _raise_fd_limit() - 1000)
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("mqtt", "kafka"):
            (Path(tmp) / name).mkdir()
        broker, kafka = MosquittoBroker(Path(tmp) / "mqtt"), KafkaBroker(Path(tmp) / "kafka")
        broker.start()
        kafka.start()
        beat = ServiceProcess(
            ["run", "hivemq", "--mqtt-url", broker.url, "--mqtt-topic", "bench/#",
             "--data-dir", f"{tmp}/beat", "--kafka-bootstrap", kafka.bootstrap,
             "--no-kafka-idempotence", "--kafka-partitions", str(partitions),
             # one record per produce request: tansu tells the end offset of a partition as
             # the base offset of its last record batch + 1, which would start live clients
             # a few records early (on Kafka, batches change nothing)
             "--kafka-batch", "1", "--log-level", "warning"],
            port=free_port(), log=Path(tmp) / "beat.log",
        )  # fmt: skip
        url = _gateway(tmp, "url", beat.base, None)
        replicas = [_gateway(tmp, f"kafka-{n}", beat.base, kafka.bootstrap) for n in (1, 2)]
        services = [beat, url, *replicas]
        try:
            for service in services:
                service.start()
            # the topic exists before the phases
            await publish(broker.port, rate=rate, seconds=1.0, topic=_topic_of)
            await asyncio.sleep(3.0)  # the replicas find it (metadata read every 2 s)
            options: dict[str, Any] = {"clients": clients, "rate": rate, "seconds": seconds}
            baseline = await _phase([url], broker.port, **options)
            one = await _phase(replicas[:1], broker.port, **options)
            two = await _phase(replicas, broker.port, **options)
            idle_url = await _idle(url, "/streams/hivemq", idle)
            idle_kafka = await _idle(replicas[0], "/streams/hivemq", idle)
            ingest = await _ingest(replicas[0], kafka.bootstrap, backlog)
        finally:
            for service in reversed(services):
                service.stop()
            kafka.stop()
            broker.stop()
    return {
        "url": baseline,
        "kafka_1": {**one, **_ratios(baseline, one)},
        "kafka_2": {**two, **_ratios(baseline, two)},
        "ingest": ingest,
        "idle": {
            "url": idle_url,
            "kafka": idle_kafka,
            "ratio_memory": round(
                idle_url["kib_per_connection"] / max(idle_kafka["kib_per_connection"], 1e-9), 3
            ),
        },
    }
