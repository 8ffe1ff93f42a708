"""The Kafka broker killed under a gateway in Kafka mode, with a client reading: the gateway says
so (``/readyz`` 503, ``kafka.connected`` false, the metrics), keeps the client's stream open,
reconnects with backoff (counted), and once the broker is back the client gets every event, with
no gap and no duplicate. tansu stores its records in S3 (moto), so a restart keeps them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.brokers import KafkaBroker, S3Server
from tests.gateway.support import beat_named, run_gateway
from tests.gateway.test_kafka_mode import kafka_gateway, numbers, per_key_in_order, readings
from tests.support import eventually, read_sse, run_beat

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def test_kafka_killed_under_a_kafka_mode_gateway_loses_nothing(tmp_path: Path) -> None:
    (tmp_path / "s3").mkdir()
    (tmp_path / "kafka").mkdir()
    s3 = S3Server(tmp_path / "s3")
    s3.start()
    kafka = KafkaBroker(tmp_path / "kafka", s3=s3)
    kafka.start()
    beat = beat_named(
        tmp_path, "test", kafka_bootstrap=kafka.bootstrap, kafka_partitions=3, kafka_batch=1,
        kafka_idempotence=False, kafka_timeout=2.0,
    )  # fmt: skip
    try:
        settings = kafka_gateway(kafka, kafka_timeout=2.0)
        async with (
            run_beat(beat),
            run_gateway(settings) as (gateway, base),
            httpx.AsyncClient(timeout=5) as http,
        ):
            reader = gateway.kafka
            assert reader is not None
            await eventually(lambda: reader.metadata_known, what="the topics read")
            client = asyncio.create_task(read_sse(f"{base}/streams/test?last_event_id=0",
                                                  count=60, timeout=90))  # fmt: skip
            await beat.pipeline.commit(readings(20))
            await eventually(lambda: "c" in reader.topics["test"], what="the topic")

            def live() -> bool:
                subscriptions = [s for c in gateway.clients for s in c.subscriptions]
                return len(subscriptions) == 3 and all(s.live for s in subscriptions)

            await eventually(live, what="the client live on every partition")
            kafka.kill()
            await beat.pipeline.commit(readings(20, start=20))

            async def says_so() -> bool:
                answer = await http.get(f"{base}/readyz")
                body = answer.json()
                return answer.status_code == 503 and body["kafka"]["connected"] is False

            await eventually(says_so, timeout=30, what="/readyz saying Kafka is down")
            assert not client.done(), "the client's stream stays open through the outage"
            metrics = (await http.get(f"{base}/metrics")).text
            assert "beats_gateway_kafka_connected 0.0" in metrics

            kafka.start()  # same port, same S3 bucket: what it acknowledged is still there
            await beat.pipeline.commit(readings(20, start=40))
            got = await client
            assert sorted(numbers(got)) == list(range(60)), "lost or duplicated events"
            assert per_key_in_order(got) and len({m.id for m in got}) == 60
            assert gateway.metrics.kafka_reconnects._value.get() >= 1
            assert (await http.get(f"{base}/readyz")).status_code == 200
    finally:
        kafka.kill()
        s3.kill()
