"""The Kafka forwarder: tails the event log and produces every event, at least once.

* Reads the log from its own cursor (``kafka``), stored in the log's database.
* Produces a batch (topic ``<prefix>.<beat>.<channel>``, key ``partitionkey``, value the
  structured-mode CloudEvent, header ``content-type: application/cloudevents+json``), waits for
  the broker's acknowledgement of every record, and only then advances the cursor.
* Kafka unreachable: the failure is logged and counted, the producer is closed, and the same
  batch is retried after an exponential backoff. The source path never waits for Kafka; the
  forwarder just lags (``beats_kafka_lag``) and catches up.
* Every Kafka call is bounded by ``timeout`` (aiokafka's own calls can hang when the broker
  disappears).
* A retry or a restart can send an event again: consumers deduplicate on the CloudEvent ``id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import Counter
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from common.eventlog import EventLog, StoredEvent
from common.metrics import Metrics
from common.settings import BeatSettings
from common.supervise import Backoff

__all__ = ["CONTENT_TYPE", "KafkaForwarder", "topic_name"]

CONTENT_TYPE = b"application/cloudevents+json"
CURSOR = "kafka"
_log = logging.getLogger(__name__)
_T = TypeVar("_T")


def topic_name(prefix: str, beat: str, channel: str) -> str:
    return f"{prefix}.{beat}.{channel}"


def client_options(settings: BeatSettings) -> dict[str, Any]:
    """Connection and security options shared by the producer and the admin client."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
        "request_timeout_ms": int(settings.kafka_timeout * 1000),
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        options["ssl_context"] = ssl.create_default_context(cafile=cafile)
    if settings.kafka_sasl_mechanism:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        password = settings.kafka_sasl_password
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options


class KafkaForwarder:
    def __init__(
        self, *, beat: str, log: EventLog, settings: BeatSettings, metrics: Metrics
    ) -> None:
        self.beat = beat
        self.log = log
        self.settings = settings
        self.metrics = metrics
        self.cursor = 0
        self.connected = False
        self.last_error: str | None = None
        self._known_topics: set[str] = set()
        self._backoff = Backoff(min_delay=0.5, max_delay=15.0)

    @property
    def lag(self) -> int:
        return max(0, self.log.head - self.cursor)

    async def run(self) -> None:
        """Forward until cancelled, reconnecting with backoff whenever Kafka fails."""
        self.cursor = int(await self.log.get_cursor(CURSOR) or 0)
        while True:
            try:
                await self._session()
            except (KafkaError, TimeoutError, OSError) as exc:
                self._failed(exc)
                await asyncio.sleep(self._backoff.next())

    async def flush(self, timeout: float) -> bool:
        """At shutdown: forward what is committed, within ``timeout``. True if nothing lags."""
        with contextlib.suppress(KafkaError, TimeoutError, OSError):
            async with asyncio.timeout(timeout):
                await self._session(until_caught_up=True)
        return self.lag == 0

    def _failed(self, exc: BaseException) -> None:
        self.connected = False
        self.metrics.kafka_connected.set(0)
        self.metrics.kafka_in_flight.set(0)
        self.metrics.kafka_errors.labels(type(exc).__name__).inc()
        self.last_error = f"{type(exc).__name__}: {exc}"
        _log.warning("kafka: %s; %d events waiting, will retry", self.last_error, self.lag)

    async def _session(self, *, until_caught_up: bool = False) -> None:
        producer = AIOKafkaProducer(
            **client_options(self.settings),
            enable_idempotence=self.settings.kafka_idempotence,
            acks="all",
            linger_ms=5,
            max_batch_size=256 * 1024,
        )
        try:
            await self._bounded(producer.start())
            self.connected = True
            self.metrics.kafka_connected.set(1)
            _log.info("kafka: connected to %s", self.settings.kafka_bootstrap)
            await self._forward(producer, until_caught_up=until_caught_up)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), self.settings.kafka_timeout)

    async def _forward(self, producer: AIOKafkaProducer, *, until_caught_up: bool) -> None:
        while True:
            self.metrics.kafka_lag.set(self.lag)
            batch = await self.log.read(after=self.cursor, limit=self.settings.kafka_batch)
            if not batch:
                if until_caught_up:
                    return
                await self.log.wait_for_append(timeout=1.0)
                continue
            await self._ensure_topics(batch)
            await self._produce(producer, batch)
            await self.log.set_cursor(CURSOR, str(batch[-1].seq))
            self.cursor = batch[-1].seq
            self._backoff.reset()
            self.last_error = None

    async def _produce(self, producer: AIOKafkaProducer, batch: list[StoredEvent]) -> None:
        self.metrics.kafka_in_flight.set(len(batch))
        prefix = self.settings.kafka_topic_prefix
        headers = [("content-type", CONTENT_TYPE)]

        async def send_all() -> list[Any]:
            futures = [
                await producer.send(
                    topic_name(prefix, self.beat, event.channel),
                    value=event.body,
                    key=event.key.encode(),
                    headers=headers,
                )
                for event in batch
            ]
            return list(await asyncio.gather(*futures))

        await self._bounded(send_all(), factor=max(1, len(batch) // 200))
        self.metrics.kafka_in_flight.set(0)
        for channel, count in Counter(event.channel for event in batch).items():
            self.metrics.kafka_produced.labels(channel).inc(count)

    async def _ensure_topics(self, batch: list[StoredEvent]) -> None:
        prefix = self.settings.kafka_topic_prefix
        wanted = {topic_name(prefix, self.beat, e.channel) for e in batch} - self._known_topics
        if not wanted:
            return
        admin = AIOKafkaAdminClient(**client_options(self.settings))
        try:
            await self._bounded(admin.start())
            existing = set(await self._bounded(admin.list_topics()))
            missing = [
                NewTopic(t, num_partitions=1, replication_factor=1) for t in wanted - existing
            ]
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await self._bounded(admin.create_topics(missing))
                _log.info("kafka: created topics %s", sorted(t.name for t in missing))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(admin.close(), self.settings.kafka_timeout)
        self._known_topics |= wanted

    async def _bounded(self, call: Awaitable[_T], *, factor: int = 1) -> _T:
        return await asyncio.wait_for(call, self.settings.kafka_timeout * factor)
