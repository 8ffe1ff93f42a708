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
* Memory: a batch holds at most ``--kafka-batch`` events and about ``--kafka-batch-bytes``
  bytes (at least one event).

Oversize events (the output-side poison message): Kafka refuses a record larger than the
producer's ``max.request.size`` (``--kafka-max-request-size``) or the broker's
``message.max.bytes``, and it would refuse it again on every retry. Such an event is not
dropped and does not stop the forwarder: it is produced as a small **stand-in record** in its
place (same topic, key and order): the event's attributes (``id``, ``type``, ``subject``,
``sequence``, ... — no ``data``), the extension ``oversize`` (the full record's size in bytes)
and ``oversizenote`` (where to read the full event: the beat's SSE stream, which has no size
limit), with the Kafka header ``beats-oversize``. Each one is logged and counted
(``beats_kafka_oversize_total{channel}``). Too large for the producer is known before sending;
a broker's refusal (``MESSAGE_TOO_LARGE``) marks the event, and the batch is sent again with
the stand-in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAlreadyExistsError,
)
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from common.eventlog import EventLog, StoredEvent
from common.metrics import Metrics
from common.settings import BeatSettings, KafkaClientSettings
from common.supervise import Backoff, bounded

__all__ = ["CONTENT_TYPE", "OVERSIZE_HEADER", "KafkaForwarder", "stand_in", "topic_name"]

CONTENT_TYPE = b"application/cloudevents+json"
OVERSIZE_HEADER = "beats-oversize"
CURSOR = "kafka"
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)
_KEEP_ATTRIBUTES = 32
_KEEP_TEXT = 512
_KEEP_KEY = 16384
_DATA = ("data", "data_base64", "datacontenttype", "dataschema")
_log = logging.getLogger(__name__)
_T = TypeVar("_T")


def topic_name(prefix: str, beat: str, channel: str) -> str:
    return f"{prefix}.{beat}.{channel}"


def record_size(key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> int:
    """The size Kafka's producer gives the record (its ``max.request.size`` check)."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers))


def stand_in(event: StoredEvent, *, size: int, limit: int) -> bytes:
    """The record produced in place of an event too large for Kafka: its attributes without
    data (long values left out), ``oversize`` and ``oversizenote``; at most a few tens of KiB."""
    try:
        original = json.loads(event.body)
    except ValueError:
        original = None
    kept: dict[str, Any] = {}
    for name, value in original.items() if isinstance(original, dict) else ():
        if name == "id" and isinstance(value, str):
            kept[name] = value[:_KEEP_KEY]
        elif name in _DATA or len(kept) >= _KEEP_ATTRIBUTES:
            continue
        elif isinstance(value, bool | int | float) or (
            isinstance(value, str) and len(value) <= _KEEP_TEXT
        ):
            kept[name] = value
    kept["sequence"] = event.seq
    kept["oversize"] = size
    kept["oversizenote"] = (
        f"the event is {size} bytes, more than Kafka takes ({limit}); the full event is on "
        f"the beat's SSE stream (/events with Last-Event-ID: {event.seq - 1})"
    )
    return json.dumps(kept, separators=(",", ":")).encode()


def client_options(settings: KafkaClientSettings) -> dict[str, Any]:
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


_HEADERS = [("content-type", CONTENT_TYPE)]
_SMALL = 65536


@dataclass(frozen=True, slots=True)
class _Record:
    event: StoredEvent
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    oversize: int | None = None
    """The full record's size when this is a stand-in."""

    @property
    def event_id(self) -> str:
        if self.oversize is None:
            return "?"
        return str(json.loads(self.value).get("id", "?"))


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
        self._refused: set[int] = set()
        """Sequences of events the broker refused as too large: sent as stand-ins."""

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
            max_request_size=self.settings.kafka_max_request_size,
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
            batch = await self.log.read(
                after=self.cursor,
                limit=self.settings.kafka_batch,
                max_bytes=self.settings.kafka_batch_bytes,
            )
            if not batch:
                if until_caught_up:
                    return
                await self.log.wait_for_append(timeout=1.0)
                continue
            await self._ensure_topics(batch)
            await self._produce(producer, batch)
            await self.log.set_cursor(CURSOR, str(batch[-1].seq))
            self.cursor = batch[-1].seq
            self._refused = {seq for seq in self._refused if seq > self.cursor}
            self._backoff.reset()
            self.last_error = None

    async def _produce(self, producer: AIOKafkaProducer, batch: list[StoredEvent]) -> None:
        self.metrics.kafka_in_flight.set(len(batch))
        records = [self._record(event) for event in batch]

        async def send_all() -> list[Any]:
            futures = [
                await producer.send(record.topic, value=record.value, key=record.key,
                                    headers=record.headers)
                for record in records
            ]  # fmt: skip
            return list(await asyncio.gather(*futures, return_exceptions=True))

        results = await self._bounded(send_all(), factor=max(1, len(batch) // 200))
        self._check(records, results)
        self.metrics.kafka_in_flight.set(0)
        for channel, count in Counter(event.channel for event in batch).items():
            self.metrics.kafka_produced.labels(channel).inc(count)
        for record in records:
            if record.oversize is not None:
                self._oversize_sent(record)

    def _record(self, event: StoredEvent) -> _Record:
        """The Kafka record of ``event``: the event itself, or its stand-in when too large."""
        topic = topic_name(self.settings.kafka_topic_prefix, self.beat, event.channel)
        key = event.key.encode()
        size = record_size(key, event.body, _HEADERS)
        limit = self.settings.kafka_max_request_size
        if size <= limit and event.seq not in self._refused:
            return _Record(event, topic, key, event.body, _HEADERS)
        value = stand_in(event, size=size, limit=limit)
        headers = [*_HEADERS, (OVERSIZE_HEADER, str(size).encode())]
        return _Record(event, topic, key[:_KEEP_KEY], value, headers, oversize=size)

    def _check(self, records: list[_Record], results: list[Any]) -> None:
        """Raise the first refusal, after marking the events the broker found too large (not
        the small ones of a refused batch: a broker refusing those is misconfigured)."""
        errors = [(r, e) for r, e in zip(records, results, strict=True) if isinstance(e, Exception)]
        for record, error in errors:
            if isinstance(error, _TOO_LARGE) and len(record.value) > _SMALL:
                _log.warning(
                    "kafka: the broker refused event %d (%d bytes) as too large: %s; "
                    "it will be sent as a stand-in record",
                    record.event.seq, len(record.value), error,
                )  # fmt: skip
                self._refused.add(record.event.seq)
        if errors:
            raise errors[0][1]

    def _oversize_sent(self, record: _Record) -> None:
        event = record.event
        self.metrics.kafka_oversize.labels(event.channel).inc()
        _log.warning(
            "kafka: event %d (id %s, type %s, %s bytes) is larger than Kafka takes; produced a "
            "stand-in record without its data (the full event is on SSE)",
            event.seq, record.event_id, event.type, record.oversize,
        )  # fmt: skip

    async def _ensure_topics(self, batch: list[StoredEvent]) -> None:
        """Create the batch's missing topics with ``--kafka-partitions`` and
        ``--kafka-replication``; a topic that exists is left as it is, with a warning when its
        partition count or replication differs from the settings."""
        prefix = self.settings.kafka_topic_prefix
        wanted = {topic_name(prefix, self.beat, e.channel) for e in batch} - self._known_topics
        if not wanted:
            return
        admin = AIOKafkaAdminClient(**client_options(self.settings))
        try:
            await self._bounded(admin.start())
            existing = wanted & set(await self._bounded(admin.list_topics()))
            await self._create_topics(admin, sorted(wanted - existing))
            if existing:
                self._compare_topics(await self._bounded(admin.describe_topics(sorted(existing))))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(admin.close(), self.settings.kafka_timeout)
        self._known_topics |= wanted

    async def _create_topics(self, admin: AIOKafkaAdminClient, names: list[str]) -> None:
        if not names:
            return
        partitions, replication = self.settings.kafka_partitions, self.settings.kafka_replication
        topics = [NewTopic(name, partitions, replication) for name in names]
        with contextlib.suppress(TopicAlreadyExistsError):
            await self._bounded(admin.create_topics(topics))
        _log.info(
            "kafka: created topics %s (%d partitions, replication %d)",
            names, partitions, replication,
        )  # fmt: skip

    def _compare_topics(self, described: list[dict[str, Any]]) -> None:
        wanted = (self.settings.kafka_partitions, self.settings.kafka_replication)
        for topic in described:
            partitions = topic.get("partitions") or []
            replication = max((len(p.get("replicas") or []) for p in partitions), default=0)
            if (len(partitions), replication) != wanted:
                _log.warning(
                    "kafka: topic %s exists with %d partitions and replication %d (settings: "
                    "%d and %d); left as it is",
                    topic.get("topic"), len(partitions), replication, *wanted,
                )  # fmt: skip

    async def _bounded(self, call: Awaitable[_T], *, factor: int = 1) -> _T:
        return await bounded(call, self.settings.kafka_timeout * factor)
