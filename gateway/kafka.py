"""Kafka mode: a beat named without a URL (``--beat fiware``) is read from its Kafka topics.

Every beat's Kafka forwarder produces each event to ``<prefix>.<beat>.<channel>`` (key: the
event's ``partitionkey``, value: the structured CloudEvent). In Kafka mode the gateway reads
those topics instead of the beat's SSE stream, so replicas of the gateway are stateless and
interchangeable, and the history a client can replay is whatever Kafka retains.

* **Upstreams are topic-partitions** (:class:`KafkaPartition`); positions are Kafka offsets.
  A client of ``/streams/{beat}`` subscribes to every partition of every topic of the beat,
  one of ``/streams/{beat}/{channel}`` to every partition of one topic. Order holds within a
  partition, that is per ``partitionkey``; nothing orders events of different partitions.
* **One consumer per gateway** (:class:`KafkaReader`), in no consumer group: it assigns itself
  every partition that has clients and seeks each to the position after its ``head``. A new
  partition starts at the end (live). Every ``--status-interval`` it reads the topics'
  metadata and end offsets: new topics and partitions of a beat are added to the clients
  that read the whole beat (or that channel), from their first offset.
* **Replays** that the ring does not cover are read by a dedicated, short-lived consumer
  (:meth:`KafkaReader.replay`). A position older than the oldest retained offset gives a
  ``beats.gap`` (reason ``retention``) and resumes from the oldest; one past the end (the
  topic was recreated) a gap with reason ``reset``.
* **At least once in, once out**: Kafka redelivers (a beat's producer retried, a beat resent
  after a crash). A partition upstream remembers the CloudEvent ids of its last
  ``--dedupe-window`` events and drops an event whose id it has just seen (counted in
  ``beats_gateway_kafka_duplicates_total``); a replay reader keeps a window of its own. Both
  windows start with the ids of the ``--dedupe-window`` records before where they start
  reading: a client whose replay ends where the live partition starts has those records, and
  a copy of one of them further on must be dropped as well.
  A record that is not a CloudEvent is skipped, logged and counted
  (``beats_gateway_kafka_rejected_total``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from common.kafka import client_options
from common.supervise import Backoff, bounded
from gateway.frames import Frame
from gateway.metrics import GatewayMetrics
from gateway.records import RecentIds, gap_frame, record_frame
from gateway.ring import RingStream
from gateway.settings import GatewaySettings

__all__ = [
    "KafkaPartition",
    "KafkaReader",
    "PartitionKey",
    "partition_label",
]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

PartitionKey = tuple[str, str, int]
"""(beat, channel, partition)."""

_POLL_MS = 500
_MAX_RECORDS = 2000
_BURST = 250
"""Records handed to the clients between two turns of the event loop: a backlog arrives in
large fetches, and clients' writers must drain between bursts (a queue of --client-queue-size
events that is taken as fast as it fills never overflows)."""


def partition_label(key: PartitionKey) -> str:
    beat, channel, partition = key
    return f"{beat}/{channel}:{partition}"


class KafkaPartition(RingStream):
    """One topic-partition of a beat, shared by every client that reads it."""

    def __init__(
        self, key: PartitionKey, *, reader: KafkaReader, ring_size: int, ring_bytes: int
    ) -> None:
        super().__init__(key, beat=key[0], ring_size=ring_size, ring_bytes=ring_bytes)
        self.channel = key[1]
        self.label = partition_label(key)
        self.tp = TopicPartition(reader.topic(key[0], key[1]), key[2])
        self.recent = RecentIds(reader.dedupe_window)
        self.remember_until: int | None = None
        """Records up to this offset are read only to fill ``recent`` (a fresh partition's
        window, see :meth:`KafkaReader._start_fresh`)."""
        self._reader = reader

    async def run(self) -> None:
        """Be read by the gateway's consumer until the pool closes this upstream."""
        self._reader.add(self)
        try:
            await asyncio.Future()
        finally:
            self._reader.remove(self)

    def replay(self, after: int) -> contextlib.AbstractAsyncContextManager[AsyncIterator[Frame]]:
        return self._reader.replay(self, after)

    def take(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if self.remember_until is not None:
            if record.offset <= self.remember_until:
                self.recent.remember(record)
                return
            self.remember_until = None
        frame = self._reader.checked(self, record, self.recent)
        if frame is not None and self.receive(frame):
            self._reader.metrics.upstream_events.labels(self.beat).inc()


@dataclass
class TopicStats:
    """What ``/beats`` shows of one topic: partitions, offsets and the produce rate."""

    partitions: int
    end: int = 0
    rate: float = 0.0
    _previous: tuple[float, int] | None = field(default=None, repr=False)

    def update(self, end: int, now: float) -> None:
        if self._previous is not None and now > self._previous[0]:
            self.rate = max(0, end - self._previous[1]) / (now - self._previous[0])
        self._previous = (now, end)
        self.end = end


class KafkaReader:
    """The gateway's consumer of the Kafka-mode beats' topics (see the module docstring).
    ``on_new``: called with the partitions found since the previous metadata refresh."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        metrics: GatewayMetrics,
        on_new: Callable[[list[PartitionKey]], None],
    ) -> None:
        self.prefix = settings.kafka_topic_prefix
        self.beats = settings.kafka_beats
        self.dedupe_window = settings.dedupe_window
        self.interval = settings.status_interval
        self.timeout = settings.kafka_timeout
        self.metrics = metrics
        self.settings = settings
        self.options: dict[str, Any] = {
            **client_options(settings),
            "enable_auto_commit": False,
            "auto_offset_reset": "none",
            # a fetch waits at most this long for records: latency, not throughput, matters
            "fetch_max_wait_ms": 100,
        }
        self.topics: dict[str, dict[str, TopicStats]] = {beat: {} for beat in self.beats}
        """beat → channel → its topic's figures, as of the last metadata refresh."""
        self.connected = False
        self.metadata_known = False
        self.error: str | None = None
        self.updated: float | None = None
        self._on_new = on_new
        self._partitions: dict[TopicPartition, KafkaPartition] = {}
        self._ends: dict[TopicPartition, int] = {}
        self._changed = asyncio.Event()
        self._closing: set[asyncio.Future[Any]] = set()
        """Closes given up on (see :meth:`_close`), kept referenced until they end."""

    # -- topics --------------------------------------------------------------------------------

    def topic(self, beat: str, channel: str) -> str:
        return f"{self.prefix}.{beat}.{channel}"

    def parse_topic(self, topic: str) -> tuple[str, str] | None:
        """(beat, channel) of one of the Kafka-mode beats' topics, else ``None``."""
        head = self.prefix + "."
        rest = topic[len(head) :] if topic.startswith(head) else ""
        for beat in self.beats:
            if rest.startswith(beat + ".") and len(rest) > len(beat) + 1:
                return beat, rest[len(beat) + 1 :]
        return None

    def partitions_of(self, beat: str, channel: str | None) -> list[PartitionKey]:
        """Every known partition of the beat's topics (``channel`` None) or of one topic."""
        stats = self.topics.get(beat, {})
        names = sorted(stats) if channel is None else [c for c in (channel,) if c in stats]
        return [(beat, name, p) for name in names for p in range(stats[name].partitions)]

    def channel_known(self, beat: str, channel: str) -> bool | None:
        if not self.metadata_known:
            return None
        return channel in self.topics.get(beat, {})

    # -- partitions with clients ---------------------------------------------------------------

    def add(self, partition: KafkaPartition) -> None:
        self._partitions[partition.tp] = partition
        self._changed.set()

    def remove(self, partition: KafkaPartition) -> None:
        if self._partitions.get(partition.tp) is partition:
            del self._partitions[partition.tp]
            self._changed.set()

    def checked(
        self, partition: KafkaPartition, record: ConsumerRecord[bytes, bytes], recent: RecentIds
    ) -> Frame | None:
        """The frame of ``record``, or ``None`` (counted) for a duplicate or a foreign record."""
        frame = record_frame(record)
        if frame is None:
            self.metrics.kafka_rejected.labels(partition.beat).inc()
            _log.warning(
                "kafka %s offset %d: not a structured CloudEvent; skipped",
                partition.label, record.offset,
            )  # fmt: skip
        elif recent.seen(frame):
            self.metrics.kafka_duplicates.labels(partition.beat).inc()
            frame = None
        return frame

    # -- the consumer --------------------------------------------------------------------------

    async def run(self) -> None:
        """Read forever; a lost connection is logged, counted and reopened after a backoff."""
        backoff = Backoff(min_delay=0.2, max_delay=5.0)
        while True:
            consumer = AIOKafkaConsumer(**self.options)
            admin = AIOKafkaAdminClient(**client_options(self.settings))
            try:
                await self._bounded(consumer.start())
                await self._bounded(admin.start())
                await self._consume(consumer, admin, backoff)
            except (KafkaError, OSError, TimeoutError) as exc:
                self._lost(exc)
            finally:
                await self._close(consumer.stop())
                await self._close(admin.close())
            self.metrics.kafka_reconnects.inc()
            await asyncio.sleep(backoff.next())

    def _lost(self, exc: BaseException) -> None:
        if self.connected or self.error is None:
            _log.warning("kafka: %s; reconnecting", exc or type(exc).__name__)
        self.connected = False
        self.error = str(exc) or type(exc).__name__
        self.metrics.kafka_connected.set(0)
        for partition in self._partitions.values():
            partition.connected = False
            partition.positioned.set()  # live clients wait no longer while Kafka is away
        self._changed.set()  # reassign and seek on the next connection

    async def _consume(
        self, consumer: AIOKafkaConsumer, admin: AIOKafkaAdminClient, backoff: Backoff
    ) -> None:
        loop = asyncio.get_running_loop()
        next_refresh = 0.0
        while True:
            if loop.time() >= next_refresh:
                await self._refresh(consumer, admin)
                backoff.reset()
                next_refresh = loop.time() + self.interval
            if self._changed.is_set():
                self._changed.clear()
                await self._assign(consumer)
            if not consumer.assignment():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), next_refresh - loop.time())
                continue
            try:
                batches = await consumer.getmany(timeout_ms=_POLL_MS, max_records=_BURST)
            except OffsetOutOfRangeError:
                await self._out_of_range(consumer)
                continue
            for tp, records in batches.items():
                partition = self._partitions.get(tp)
                if partition is not None:
                    for record in records:
                        partition.take(record)
            await asyncio.sleep(0)  # the clients' writers take the burst

    async def _assign(self, consumer: AIOKafkaConsumer) -> None:
        """Read every partition with clients, each from the position after its head (a new
        one from its end: live, see :meth:`_start_fresh`)."""
        wanted = dict(self._partitions)
        consumer.assign(list(wanted))
        fresh = [tp for tp, partition in wanted.items() if partition.head is None]
        for tp, partition in wanted.items():
            if partition.head is not None:
                consumer.seek(tp, partition.head + 1)
                partition.connected = True
        if fresh:
            await self._start_fresh(consumer, [wanted[tp] for tp in fresh])

    async def _start_fresh(self, consumer: AIOKafkaConsumer, fresh: list[KafkaPartition]) -> None:
        """Start partitions that had no clients at their end (live), after reading the
        ``--dedupe-window`` records before it only to remember their ids: a client that
        replays up to the end has them, so a copy of one of them further on is dropped."""
        tps = [partition.tp for partition in fresh]
        ends = await self._bounded(consumer.end_offsets(tps))
        oldest = ends
        if self.dedupe_window:
            oldest = await self._bounded(consumer.beginning_offsets(tps))
        for partition in fresh:
            end = ends[partition.tp]
            partition.set_head(end - 1)
            start = max(oldest[partition.tp], end - self.dedupe_window)
            if start < end:
                partition.remember_until = end - 1
            consumer.seek(partition.tp, start)
            partition.connected = True

    async def _out_of_range(self, consumer: AIOKafkaConsumer) -> None:
        """Retention removed what a partition was about to read (or the topic was recreated):
        every assigned partition outside what Kafka holds gets a gap and resumes from its
        oldest offset."""
        for tp in list(consumer.assignment()):
            partition = self._partitions.get(tp)
            if partition is None or partition.head is None:
                continue
            held, after = await self._held(consumer, tp), partition.head
            if held.start <= after + 1 <= held.stop:
                if partition.remember_until is not None:
                    # retention removed part of a fresh partition's window: live without it
                    partition.remember_until = None
                    consumer.seek(tp, after + 1)
                continue
            reason = "retention" if after + 1 < held.start else "reset"
            partition.remember_until = None
            partition.receive(gap_frame(partition.label, after, held.start - 1, reason))
            consumer.seek(tp, held.start)

    async def _refresh(self, consumer: AIOKafkaConsumer, admin: AIOKafkaAdminClient) -> None:
        """Read the topics, their partitions and end offsets (figures for ``/beats``)."""
        found: dict[tuple[str, str], int] = {}
        names = [t for t in await self._bounded(admin.list_topics()) if self.parse_topic(t)]
        for topic in await self._bounded(admin.describe_topics(names)) if names else ():
            parsed = self.parse_topic(str(topic.get("topic")))
            partitions = topic.get("partitions") or []
            if parsed and partitions and not topic.get("error_code"):
                found[parsed] = len(partitions)
        tps = [TopicPartition(self.topic(*key), p) for key, n in found.items() for p in range(n)]
        self._ends = await self._bounded(consumer.end_offsets(tps)) if tps else {}
        new = self._learn(found)
        self.connected, self.metadata_known, self.error = True, True, None
        self.updated = time.time()
        self.metrics.kafka_connected.set(1)
        for partition in self._partitions.values():
            partition.connected = partition.tp in consumer.assignment()
        if new:
            _log.info("kafka: %d new partitions: %s", len(new), sorted(map(partition_label, new)))
            self._on_new(new)

    def _learn(self, found: dict[tuple[str, str], int]) -> list[PartitionKey]:
        now = asyncio.get_running_loop().time()
        new: list[PartitionKey] = []
        for (beat, channel), count in found.items():
            stats = self.topics[beat].get(channel)
            before = stats.partitions if stats else (0 if self.metadata_known else count)
            if stats is None:
                stats = self.topics[beat][channel] = TopicStats(count)
            stats.partitions = max(count, stats.partitions)
            new.extend((beat, channel, p) for p in range(before, count))
            topic = self.topic(beat, channel)
            ends = (self._ends.get(TopicPartition(topic, p), 0) for p in range(count))
            stats.update(sum(ends), now)
            self.metrics.kafka_lag.labels(topic).set(self.lag(beat, channel))
        return new

    def lag(self, beat: str, channel: str) -> int:
        """Events in the topic's partitions with clients that this gateway has not read."""
        topic = self.topic(beat, channel)
        return sum(
            max(0, self._ends.get(tp, 0) - 1 - partition.head)
            for tp, partition in self._partitions.items()
            if tp.topic == topic and partition.head is not None
        )

    async def _bounded(self, call: Awaitable[_T]) -> _T:
        return await bounded(call, self.timeout)

    async def _close(self, closing: Awaitable[None]) -> None:
        """Wait for a consumer's or admin client's close at most ``--kafka-timeout``. One that
        takes longer (aiokafka's consumer can hang in ``stop()`` once the broker is gone, and
        ignore the cancellation ``wait_for`` would send) is left to end in the background, so
        that the reader reconnects."""
        task = asyncio.ensure_future(closing)
        done, _ = await asyncio.wait({task}, timeout=self.timeout)
        if not done:
            _log.info("kafka: a client did not close within %.1f s; left to close", self.timeout)
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        elif not task.cancelled() and task.exception() is not None:
            _log.debug("kafka: closing a client: %s", task.exception())

    # -- replays -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def replay(
        self, partition: KafkaPartition, after: int
    ) -> AsyncIterator[AsyncIterator[Frame]]:
        """A dedicated consumer of one partition from the position after ``after`` (see the
        module docstring); Kafka errors are raised as :class:`~gateway.upstream.BeatError`."""
        from gateway.upstream import BeatError

        consumer = AIOKafkaConsumer(**self.options)
        try:
            await self._bounded(consumer.start())
            consumer.assign([partition.tp])
            yield self._replayed(consumer, partition, after)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise BeatError(f"kafka {partition.label}: {exc or type(exc).__name__}") from exc
        finally:
            await self._close(consumer.stop())

    async def _replayed(
        self, consumer: AIOKafkaConsumer, partition: KafkaPartition, after: int
    ) -> AsyncIterator[Frame]:
        """Positions Kafka no longer (or never) held: a gap, then from the oldest or the end.
        ``after`` -1 (everything) starts at the oldest with no gap."""
        tp = partition.tp
        held = await self._held(consumer, tp)
        start = max(after + 1, held.start)
        if after >= 0 and start > after + 1:
            yield gap_frame(partition.label, after, start - 1, "retention")
        elif after >= held.stop and not await self._holds(consumer, tp, after):
            # the topic was recreated: all it holds is newer than the client's position
            yield gap_frame(partition.label, after, held.start - 1, "reset")
            start = held.start
        recent = RecentIds(self.dedupe_window)
        if start == after + 1:
            await self._prime(consumer, tp, recent, after, oldest=held.start)
        consumer.seek(tp, start)
        while True:
            try:
                batch = await consumer.getmany(tp, timeout_ms=_POLL_MS, max_records=_MAX_RECORDS)
            except OffsetOutOfRangeError:
                # past the end (the topic was recreated: all it holds is newer), or retention
                # moved on meanwhile: from the oldest
                held = await self._held(consumer, tp)
                reason = "retention" if start < held.start else "reset"
                yield gap_frame(partition.label, start - 1, held.start - 1, reason)
                consumer.seek(tp, start := held.start)
                continue
            records = batch.get(tp, [])
            for record in records:
                frame = self.checked(partition, record, recent)
                yield frame if frame is not None else Frame.marker(record.offset)
            start = records[-1].offset + 1 if records else start
            if not records and partition.head is not None and start - 1 >= partition.head:
                yield Frame.marker(start - 1)  # caught up with the live partition

    async def _prime(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        recent: RecentIds,
        after: int,
        *,
        oldest: int,
    ) -> None:
        """Remember the ids of the ``--dedupe-window`` records up to ``after``: the client has
        them, so a copy of one of them further on (a beat's redelivery) is dropped, as the live
        partition drops it. Best effort: a slow or failed read leaves the window shorter."""
        position = max(oldest, after + 1 - recent.size)
        consumer.seek(tp, position)
        while position <= after:
            try:
                batch = await consumer.getmany(tp, timeout_ms=_POLL_MS, max_records=_MAX_RECORDS)
            except OffsetOutOfRangeError:
                return
            records = [r for r in batch.get(tp, ()) if r.offset <= after]
            if not records:
                return
            for record in records:
                recent.remember(record)
            position = records[-1].offset + 1

    async def _holds(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> bool:
        """Whether ``tp`` holds a record at ``offset``: a position at or past the end offset
        Kafka tells is checked by reading it (brokers such as tansu tell an end offset below
        their last record)."""
        consumer.seek(tp, offset)
        try:
            batch = await consumer.getmany(tp, timeout_ms=_POLL_MS, max_records=1)
        except OffsetOutOfRangeError:
            return False
        return any(record.offset == offset for record in batch.get(tp, ()))

    async def _held(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> range:
        """The offsets Kafka holds of ``tp``: from the oldest to the end."""
        begin = (await self._bounded(consumer.beginning_offsets([tp])))[tp]
        end = (await self._bounded(consumer.end_offsets([tp])))[tp]
        return range(begin, end)

    def report(self, beat: str) -> dict[str, Any]:
        """``/beats`` for a beat read from Kafka, in the shape of a polled beat's report."""
        stats = self.topics.get(beat, {})
        topics = {
            self.topic(beat, channel): {
                "partitions": s.partitions,
                "end": s.end,
                "rate": round(s.rate, 3),
                "lag": self.lag(beat, channel),
            }
            for channel, s in stats.items()
        }
        return {
            "name": beat,
            "url": None,
            "reachable": self.connected,
            "ready": self.connected and self.metadata_known,
            "checks": {"kafka": {"ok": self.connected, "detail": self.error or "connected"}},
            "log": {},
            "rate": round(sum(s.rate for s in stats.values()), 3),
            "rates": {channel: round(s.rate, 3) for channel, s in stats.items()},
            "events": sum(s.end for s in stats.values()),
            "kafka": {
                "connected": self.connected,
                "lag": sum(t["lag"] for t in topics.values()),
                "topics": topics,
            },
            "subscribers": 0,
            "error": self.error,
            "updated": self.updated,
        }
