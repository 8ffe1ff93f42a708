"""docs/replicas.md's OpenCTI hot standby: two beat processes read the same live stream (the
emulator) into the same Kafka topic; every event is there twice, with one CloudEvent id and in
one partition, so a reader drops the second by id."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from tests.brokers import KafkaBroker
from tests.faults.harness import TOKEN, append_indicators
from tests.processes import ServiceProcess
from tests.support import free_port

TOTAL = 100
TOPIC = "beats.opencti.indicators"


async def _records(bootstrap: str, *, count: int, timeout: float = 60) -> list[tuple[str, int]]:
    """(CloudEvent id, partition) of every record, once ``count`` are there."""
    consumer = AIOKafkaConsumer(
        TOPIC, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list[tuple[str, int]] = []
    try:
        async with asyncio.timeout(timeout):
            while len(found) < count:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    found += [(json.loads(r.value)["id"], r.partition) for r in batch]
    except TimeoutError:
        pass  # the assertions say what is missing
    finally:
        await consumer.stop()
    return found


def _replica(tmp_path: Path, name: str, url: str, bootstrap: str) -> ServiceProcess:
    args = ["run", "opencti", "--opencti-url", url, "--opencti-token", TOKEN,
            "--opencti-start", "0", "--data-dir", str(tmp_path / name),
            "--kafka-bootstrap", bootstrap, "--no-kafka-idempotence",
            "--kafka-partitions", "3", "--log-level", "warning"]  # fmt: skip
    return ServiceProcess(args, port=free_port(), log=tmp_path / f"{name}.log")


async def test_two_replicas_of_one_stream_write_each_event_twice_with_one_id(
    tmp_path: Path, kafka: KafkaBroker
) -> None:
    emulator = ServiceProcess(
        ["emulate", "opencti", "--token", TOKEN, "--scenario-rate", "0"],
        port=free_port(),
        log=tmp_path / "opencti.log",
    )
    replicas = [_replica(tmp_path, name, emulator.base, kafka.bootstrap) for name in "ab"]
    try:
        await asyncio.to_thread(emulator.start, ready=False)
        for replica in replicas:
            await asyncio.to_thread(replica.start)
        await append_indicators(emulator.base, TOTAL)
        records = await _records(kafka.bootstrap, count=2 * TOTAL)
    finally:
        for process in (*replicas, emulator):
            process.stop()
    partitions: dict[str, list[int]] = defaultdict(list)
    for event_id, partition in records:
        partitions[event_id].append(partition)
    print(f"\nREPLICAS OpenCTI hot standby: {len(records)} records, {len(partitions)} ids")
    assert len(partitions) == TOTAL
    assert all(len(p) == 2 and p[0] == p[1] for p in partitions.values())
