"""The gateway in Kafka mode, over a real Kafka-protocol broker (tansu) and real HTTP: a beat
produces into 3-partition topics, two gateway replicas serve them, clients move between them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from httpx_sse import aconnect_sse
from hypothesis import given
from hypothesis import strategies as st

from common.envelope import CloudEvent, new_event
from common.service import Beat
from gateway.positions import decode_position, encode_position, parse_position
from gateway.service import Gateway
from gateway.settings import GatewaySettings
from tests.brokers import KafkaBroker
from tests.gateway.support import beat_named, run_gateway
from tests.support import (
    SseMessage,
    eventually,
    free_port,
    make_events,
    read_sse,
    read_sse_until,
    run_beat,
)

pytestmark = pytest.mark.kafka

TOPIC = "beats.test.c"


def readings(count: int, *, start: int = 0) -> list[CloudEvent]:
    """Events of five partition keys: order must hold per key."""
    events: list[CloudEvent] = make_events(count, start=start, keys=5)
    return events


def kafka_gateway(kafka: KafkaBroker, **options: Any) -> GatewaySettings:
    options.setdefault("status_interval", 0.2)
    options.setdefault("upstream_linger", 0.2)
    return GatewaySettings(
        port=free_port(), beat=["test"], kafka_bootstrap=kafka.bootstrap, **options
    )


def producing_beat(tmp_path: Path, kafka: KafkaBroker, *, batch: int = 7) -> Beat:
    """A beat whose forwarder produces into 3-partition topics. ``batch`` 1: one record per
    produce request, for the tests that read end offsets: tansu answers a ListOffsets for the
    end with the base offset of the partition's last record batch + 1, not the offset after
    its last record, as Kafka does."""
    return beat_named(
        tmp_path,
        "test",
        kafka_bootstrap=kafka.bootstrap,
        kafka_partitions=3,
        kafka_batch=batch,
        kafka_idempotence=False,  # tansu has no idempotent producer
    )


def numbers(messages: list[SseMessage]) -> list[int]:
    return [m.json()["data"]["n"] for m in messages if m.event != "beats.gap"]


def has(messages: list[SseMessage], wanted: range) -> bool:
    """Whether every event of ``wanted`` arrived (partitions are not ordered among them)."""
    return set(wanted) <= set(numbers(messages))


def per_key_in_order(messages: list[SseMessage]) -> bool:
    last: dict[str, int] = {}
    for message in messages:
        event = message.json()
        key, n = event["partitionkey"], event["data"]["n"]
        if last.get(key, -1) > n:
            return False
        last[key] = n
    return True


async def in_kafka(beat: Beat, *gateways: Gateway) -> None:
    """Wait until Kafka acknowledged every event the beat committed, and the ``gateways``
    know its topic (a client opened later reads it live, not as a new topic)."""
    forwarder = beat.forwarder
    assert forwarder is not None
    await eventually(lambda: forwarder.lag == 0, what="the beat's events in Kafka")
    readers = [gateway.kafka for gateway in gateways if gateway.kafka is not None]
    await eventually(
        lambda: all("c" in reader.topics["test"] for reader in readers),
        what="the gateways to see the topic",
    )


async def ready(base: str) -> None:
    async with httpx.AsyncClient() as client:

        async def answered() -> bool:
            return (await client.get(f"{base}/readyz")).json().get("ready") is True

        await eventually(answered, what="the gateway reading Kafka")


@contextlib.asynccontextmanager
async def two_gateways(kafka: KafkaBroker) -> AsyncIterator[tuple[Gateway, str, Gateway, str]]:
    async with (
        run_gateway(kafka_gateway(kafka)) as (gateway_a, base_a),
        run_gateway(kafka_gateway(kafka)) as (gateway_b, base_b),
    ):
        await ready(base_a)
        await ready(base_b)
        yield gateway_a, base_a, gateway_b, base_b


async def test_a_client_moves_to_another_replica_with_no_gap_and_no_duplicate(
    tmp_path: Path, kafka: KafkaBroker
) -> None:
    beat = producing_beat(tmp_path, kafka)
    async with run_beat(beat), two_gateways(kafka) as (gateway_a, base_a, _, base_b):
        # a live client from before the topic exists: the gateway finds it, from its start
        live = asyncio.create_task(read_sse(f"{base_a}/streams/test", count=60, timeout=30))
        await eventually(lambda: len(gateway_a.clients) == 1, what="the live client")
        await beat.pipeline.commit(readings(40))
        first = await read_sse(f"{base_a}/streams/test?last_event_id=0", count=20, timeout=30)
        resume = first[-1].id
        assert resume.startswith("k") and "test/c:0=" in decode_position(resume)
        rest = asyncio.create_task(
            read_sse(
                f"{base_b}/streams/test", count=40, headers={"Last-Event-ID": resume}, timeout=30
            )
        )
        await beat.pipeline.commit(readings(20, start=40))
        moved = await rest
        got = numbers(first) + numbers(moved)
        assert sorted(got) == list(range(60)), "lost or duplicated events"
        assert per_key_in_order(first + moved)
        assert sorted(numbers(await live)) == list(range(60))
        # the merged stream and the channel stream read the same partitions
        merged = await read_sse(f"{base_b}/streams?last_event_id=0", count=60, timeout=30)
        channel = await read_sse(f"{base_b}/streams/test/c?last_event_id=0", count=60)
        assert sorted(numbers(merged)) == sorted(numbers(channel)) == list(range(60))


async def test_status_shows_kafka_topics_partitions_and_lag(
    tmp_path: Path, kafka: KafkaBroker
) -> None:
    beat = producing_beat(tmp_path, kafka, batch=1)
    async with run_beat(beat), run_gateway(kafka_gateway(kafka)) as (gateway, base):
        await ready(base)
        await beat.pipeline.commit(readings(30))
        await in_kafka(beat)
        await read_sse(f"{base}/streams/test?last_event_id=0", count=30, timeout=30)
        assert gateway.kafka is not None
        stats = gateway.kafka.topics["test"]
        await eventually(lambda: stats["c"].end == 30, what="the end offsets read")
        listener = asyncio.create_task(read_sse(f"{base}/streams/test", count=1, timeout=30))
        await eventually(lambda: len(gateway.pool.all()) == 3, what="a client's partitions")
        await eventually(lambda: all(u.connected for u in gateway.pool.all()), what="assigned")
        async with httpx.AsyncClient() as client:
            readiness = (await client.get(f"{base}/readyz")).json()
            report = (await client.get(f"{base}/beats")).json()["beats"][0]
            metrics = (await client.get(f"{base}/metrics")).text
        assert readiness["ready"] and readiness["kafka"]["connected"]
        assert readiness["beats"]["test"] == {"ready": True, "reachable": True}
        topic = report["kafka"]["topics"][TOPIC]
        assert topic["partitions"] == 3 and topic["end"] == 30 and topic["lag"] == 0
        assert report["events"] == 30 and report["kafka"]["connected"] is True
        assert {s["stream"] for s in report["gateway"]} == {f"test/c:{p}" for p in range(3)}
        assert "beats_gateway_kafka_connected 1.0" in metrics
        listener.cancel()


async def test_duplicates_and_foreign_records_are_dropped_counted_and_the_rest_flows(
    tmp_path: Path, kafka: KafkaBroker
) -> None:
    """A redelivered CloudEvent (same id, same partition) reaches a client once; a record that
    is no CloudEvent is skipped; both are counted, and the events around them all arrive."""
    beat = producing_beat(tmp_path, kafka, batch=1)
    async with run_beat(beat), run_gateway(kafka_gateway(kafka)) as (gateway, base):
        await ready(base)
        await beat.pipeline.commit(readings(10))
        await in_kafka(beat, gateway)
        live = asyncio.create_task(
            read_sse_until(f"{base}/streams/test", lambda m: has(m, range(10, 20)), timeout=30)
        )
        await eventually(lambda: len(gateway.clients) == 1, what="the client")
        await eventually(lambda: all(u.head is not None for u in gateway.pool.all()),
                         what="the partitions assigned")  # fmt: skip
        again = readings(1, start=10)[0]
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
        await producer.start()
        try:
            value = json.dumps(again.model_dump(mode="json", exclude_none=True)).encode()
            key = b"key-0"
            for record in (value, b"\xff not json", b'{"no": "type"}', value):
                await producer.send_and_wait(TOPIC, record, key=key)
        finally:
            await producer.stop()
        await beat.pipeline.commit(readings(9, start=11))
        got = numbers(await live)
        assert sorted(got) == list(range(10, 20))
        assert gateway.metrics.kafka_duplicates.labels("test")._value.get() == 1
        assert gateway.metrics.kafka_rejected.labels("test")._value.get() == 2
        # a replay through a dedicated consumer drops them as well
        replayed = await read_sse(f"{base}/streams/test?last_event_id=0", count=20, timeout=30)
        assert sorted(numbers(replayed)) == list(range(20))


async def test_a_copy_of_an_event_the_client_has_is_not_sent_after_it_moves(
    tmp_path: Path, kafka: KafkaBroker
) -> None:
    """A redelivery (same id, same partition, further on) of an event the client received
    before it moved is dropped by the replica it resumes on, whose replay starts past the
    original: the replay remembers the ids of the records before the client's position."""
    beat = producing_beat(tmp_path, kafka, batch=1)
    async with run_beat(beat), two_gateways(kafka) as (_, base_a, gateway_b, base_b):
        committed = readings(10)
        await beat.pipeline.commit(committed)
        first = await read_sse(f"{base_a}/streams/test?last_event_id=0", count=10, timeout=30)
        await produce_copy(kafka, committed[3])
        await beat.pipeline.commit(readings(5, start=10))  # n=13 follows the copy (same key)
        moved = await read_sse_until(
            f"{base_b}/streams/test",
            lambda m: has(m, range(10, 15)),
            headers={"Last-Event-ID": first[-1].id},
            timeout=30,
        )
        assert sorted(numbers(first)) == list(range(10))
        assert sorted(numbers(moved)) == list(range(10, 15)), "the copy was sent again"
        assert gateway_b.metrics.kafka_duplicates.labels("test")._value.get() == 1


async def test_a_client_keeps_its_position_on_a_replica_that_finds_the_topic_later(
    tmp_path: Path, kafka: KafkaBroker
) -> None:
    """A client moves to a replica that has not read the topic's metadata yet: the partitions
    its id names are joined from its positions when the replica finds them, not from their
    first offset (it got every event again: the copy test's flake)."""
    beat = producing_beat(tmp_path, kafka, batch=1)
    late = kafka_gateway(kafka, status_interval=5.0)
    async with (
        run_beat(beat),
        run_gateway(kafka_gateway(kafka)) as (gateway_a, base_a),
        run_gateway(late) as (gateway_b, base_b),
    ):
        await ready(base_b)  # its metadata read: no topic yet, the next one in 5 s
        await beat.pipeline.commit(readings(10))
        await in_kafka(beat, gateway_a)
        first = await read_sse(f"{base_a}/streams/test?last_event_id=0", count=10, timeout=30)
        assert gateway_b.kafka is not None and "c" not in gateway_b.kafka.topics["test"]
        await beat.pipeline.commit(readings(5, start=10))
        moved = await read_sse_until(
            f"{base_b}/streams/test",
            lambda m: has(m, range(10, 15)),
            headers={"Last-Event-ID": first[-1].id},
            timeout=30,
        )
    assert sorted(numbers(moved)) == list(range(10, 15))


async def test_a_copy_of_a_replayed_event_is_dropped_by_the_partition_gone_live(
    tmp_path: Path, kafka: KafkaBroker
) -> None:
    """The first client of a partition replays up to the partition's end and goes live there;
    a redelivery after that of an event its replay sent is dropped by the live partition,
    which starts with the ids of the records before its end (the scale test's client 2 got
    one such copy)."""
    beat = producing_beat(tmp_path, kafka, batch=1)
    async with run_beat(beat), run_gateway(kafka_gateway(kafka)) as (gateway, base):
        committed = readings(10)
        await beat.pipeline.commit(committed)
        await in_kafka(beat, gateway)
        url = f"{base}/streams/test?last_event_id=0"
        reading = asyncio.create_task(read_sse_until(url, lambda m: has(m, range(15)), timeout=30))
        upstreams = gateway.pool.all
        await eventually(
            lambda: len(upstreams()) == 3 and all(u.connected for u in upstreams()),
            what="the partitions read live",
        )
        await produce_copy(kafka, committed[3])
        await beat.pipeline.commit(readings(5, start=10))  # n=13 follows the copy (same key)
        messages = await reading
        assert sorted(numbers(messages)) == list(range(15)), "the copy was sent again"
        # the live partition dropped it (and the client's replay too, if it read that far)
        assert gateway.metrics.kafka_duplicates.labels("test")._value.get() >= 1


async def test_a_live_client_gets_every_event_committed_once_its_stream_started(
    tmp_path: Path, kafka: KafkaBroker
) -> None:
    """No ``Last-Event-ID``: live. Every event committed after the response started is sent,
    on partitions no client read yet too: the replica knows where they end before it answers
    (it used to answer first, and an event committed while its consumer was still in a fetch
    for other partitions, up to half a second, was before the partition's start)."""
    beat = producing_beat(tmp_path, kafka, batch=1)
    async with (
        run_beat(beat),
        run_gateway(kafka_gateway(kafka, upstream_linger=0)) as (
            gateway,
            base,
        ),
    ):
        await beat.pipeline.commit([*make_events(1, channel="d"), *readings(1)])
        await in_kafka(beat, gateway)
        reader = gateway.kafka
        assert reader is not None
        await eventually(lambda: "d" in reader.topics["test"], what="topic d")
        # a reader of topic d keeps the replica's consumer fetching
        other = asyncio.create_task(read_sse(f"{base}/streams/test/d", count=99, timeout=60))
        await eventually(lambda: len(gateway.pool.all()) == 3, what="topic d read")
        async with httpx.AsyncClient(timeout=10) as client:
            for n in range(100, 105):
                async with aconnect_sse(client, "GET", f"{base}/streams/test/c") as sse:
                    await beat.pipeline.commit(readings(1, start=n))
                    async with asyncio.timeout(5):
                        first = await anext(m async for m in sse.aiter_sse() if m.data)
                    assert json.loads(first.data)["data"]["n"] == n
                await eventually(lambda: len(gateway.pool.all()) == 3, what="c released")
        other.cancel()


async def produce_copy(kafka: KafkaBroker, event: CloudEvent) -> None:
    """Produce ``event`` again, as a beat's forwarder resends it after a crash."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
    await producer.start()
    try:
        value = json.dumps(event.model_dump(mode="json", exclude_none=True)).encode()
        await producer.send_and_wait(TOPIC, value, key=event.partitionkey.encode())
    finally:
        await producer.stop()


async def test_bad_and_foreign_positions(tmp_path: Path, kafka: KafkaBroker) -> None:
    beat = producing_beat(tmp_path, kafka)
    async with run_beat(beat), run_gateway(kafka_gateway(kafka)) as (gateway, base):
        await ready(base)
        await beat.pipeline.commit(readings(9))
        await in_kafka(beat, gateway)
        async with httpx.AsyncClient() as client:
            for bad in ("17", "kAAAA", "k!!", "test/c:0=x"):
                response = await client.get(
                    f"{base}/streams/test", headers={"Last-Event-ID": bad}, timeout=5
                )
                assert response.status_code == 400, bad
                assert "Last-Event-ID" in response.json()["detail"]
        # a position past the end (the topic was recreated): beats.gap, then all it holds
        ahead = "test/c:0=1000;test/c:1=1000;test/c:2=1000"
        url = f"{base}/streams/test?last_event_id={ahead}"
        stream = asyncio.create_task(read_sse_until(url, lambda m: has(m, range(10)), timeout=30))
        gaps = gateway.metrics.gaps
        await eventually(lambda: gaps._value.get() == 3, what="a gap per partition")
        await beat.pipeline.commit(readings(1, start=9))
        messages = await stream
        signals = [m.json() for m in messages if m.event == "beats.gap"]
        assert {g["reason"] for g in signals} == {"reset"} and len(signals) == 3
        assert {g["stream"] for g in signals} == {f"test/c:{p}" for p in range(3)}
        assert sorted(numbers(messages)) == list(range(10)) and per_key_in_order(messages[3:])


TOKENS = """
tokens:
  - name: admin
    token: admin-secret-0123456789
    scopes: ["*"]
  - name: analyst
    token: analyst-secret-0123456789
    scopes: ["opencti"]
    tlp_max: amber
  - name: reports-only
    token: reports-secret-0123456789
    scopes: ["opencti:reports"]
"""


def threat(n: int) -> CloudEvent:
    level = ("clear", "green", "amber", "amber+strict", "red")[n % 5]
    return new_event(
        beat="opencti",
        type="beats.opencti.indicator",
        source="opencti://test",
        channel=("indicators", "reports")[n % 2],
        partitionkey=f"actor-{n % 4}",
        subject=f"indicator--{n}",
        data={"n": n},
        tlp=level,
    )


async def test_tokens_scopes_tlp_and_filters_hold_in_kafka_mode(
    tmp_path: Path, kafka: KafkaBroker
) -> None:
    """What a token may read does not depend on where the gateway reads from: the TLP ceiling
    and channel scopes hold on live and replayed events from Kafka, filters apply after them."""
    beat = beat_named(
        tmp_path, "opencti", kafka_bootstrap=kafka.bootstrap, kafka_partitions=3,
        kafka_idempotence=False,
    )  # fmt: skip
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(TOKENS)
    settings = GatewaySettings(
        port=free_port(), beat=["opencti"], kafka_bootstrap=kafka.bootstrap,
        tokens_file=tokens, status_interval=0.2, upstream_linger=0.2,
    )  # fmt: skip
    async with run_beat(beat), run_gateway(settings) as (_, base):
        await ready(base)
        await beat.pipeline.commit([threat(n) for n in range(40)])
        forwarder = beat.forwarder
        assert forwarder is not None
        await eventually(lambda: forwarder.lag == 0, what="the events in Kafka")

        async def read(token: str, path: str, count: int) -> list[SseMessage]:
            headers = {"Authorization": f"Bearer {token}"}
            return await read_sse(f"{base}{path}", count=count, headers=headers, timeout=30)

        def levels(messages: list[SseMessage]) -> set[str]:
            return {m.json()["tlp"] for m in messages}

        analyst = await read("analyst-secret-0123456789", "/streams/opencti?last_event_id=0", 24)
        assert levels(analyst) == {"clear", "green", "amber"} and len(numbers(analyst)) == 24
        reports = await read("reports-secret-0123456789", "/streams?last_event_id=0", 20)
        assert sorted(numbers(reports)) == list(range(1, 40, 2))
        # indicators 10, 12, 14, 16, 18 match; 14 (red) and 18 (amber+strict) are above amber
        path = "/streams/opencti/indicators?last_event_id=0&prefix.subject=indicator--1"
        filtered = await read("analyst-secret-0123456789", path, 3)
        assert sorted(numbers(filtered)) == [10, 12, 16]
        async with httpx.AsyncClient() as client:
            refused = await client.get(
                f"{base}/streams/opencti/indicators",
                headers={"Authorization": "Bearer reports-secret-0123456789"},
            )
            assert refused.status_code == 403
            report = await client.get(
                f"{base}/beats", headers={"Authorization": "Bearer reports-secret-0123456789"}
            )
        (shown,) = report.json()["beats"]
        assert set(shown["rates"]) <= {"reports"} and "kafka" not in shown


@given(
    positions=st.dictionaries(
        st.from_regex(r"[a-z]{1,6}(/[a-z:]{1,8}:[0-9]{1,2})?", fullmatch=True),
        st.integers(min_value=-1, max_value=2**40),
        max_size=12,
    )
)
def test_positions_survive_the_opaque_id(positions: dict[str, int]) -> None:
    raw = encode_position(positions.items())
    assert raw.startswith("k") and "=" not in raw and ";" not in raw
    labels = list(positions)
    partitions = frozenset(label for label in labels if ":" in label)
    if positions:
        assert parse_position(raw, labels, partitions=partitions) == positions


def produce_blocking(bootstrap: str, start: int, count: int) -> None:
    """Produce ``count`` readings from this thread, in an event loop of its own."""

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
        await producer.start()
        try:
            for event in readings(count, start=start):
                value = json.dumps(event.model_dump(mode="json", exclude_none=True)).encode()
                await producer.send(TOPIC, value, key=event.partitionkey.encode())
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(produce())


async def test_a_burst_from_kafka_does_not_overflow_a_client_that_keeps_up(
    tmp_path: Path, kafka: KafkaBroker
) -> None:
    """A backlog arrives in large fetches; the clients' writers drain between bursts, so a
    live client with the default queue (1,000 events) takes 5,000 records produced at once.
    The client is curl, in a process of its own: it reads as fast as the socket delivers,
    whatever this event loop (the gateway's) is doing."""
    beat = producing_beat(tmp_path, kafka, batch=1)
    async with run_beat(beat), run_gateway(kafka_gateway(kafka)) as (gateway, base):
        await ready(base)
        await beat.pipeline.commit(readings(3))
        await in_kafka(beat, gateway)
        live = asyncio.create_task(curl_events(f"{base}/streams/test", 5000))
        await eventually(lambda: len(gateway.clients) == 1, what="the client")
        await eventually(lambda: all(u.connected for u in gateway.pool.all()), what="assigned")
        # the gateway's event loop is held while another thread produces the records: it
        # then finds them all at once, in fetches of thousands
        thread = threading.Thread(target=produce_blocking, args=(kafka.bootstrap, 3, 5000))
        thread.start()
        thread.join()  # blocks this event loop, which is the gateway's too, on purpose
        assert sorted(await live) == list(range(3, 5003))
        assert gateway.metrics.overflow._value.get() == 0


async def curl_events(url: str, count: int) -> list[int]:
    """``data.n`` of the events ``curl -N`` reads from ``url``, until ``count`` or the end."""
    curl = await asyncio.create_subprocess_exec(
        "curl", "-sN", "--max-time", "60", url, stdout=asyncio.subprocess.PIPE
    )
    assert curl.stdout is not None
    got: list[int] = []
    try:
        while len(got) < count and (line := await curl.stdout.readline()):
            if line.startswith(b"data: "):
                got.append(json.loads(line[6:])["data"]["n"])
    finally:
        curl.kill()
        await curl.wait()
    return got
