"""The beats' Kafka topics in Spark: a parser for Spark's Kafka source, and ``beats-kafka``.

The beats produce every event to ``<prefix>.<beat>.<channel>`` with the CloudEvent in
structured JSON mode as the value. On a cluster with Spark's Kafka connector::

    raw = spark.readStream.format("kafka").option("kafka.bootstrap.servers", ...)
                .option("subscribe", "beats.hivemq.messages").load()
    events = parse_kafka(raw)   # the same columns as format("beats")

Without the connector's jar (offline machines, tests) ``format("beats-kafka")`` reads the same
topics with kafka-python and produces the *same schema as Spark's Kafka source* (``key``,
``value``, ``topic``, ``partition``, ``offset``, ``timestamp``, ``timestampType``, plus
``headers`` with ``includeHeaders=true``), so code moves between the two unchanged. Options:
``kafka.bootstrap.servers``, ``subscribe`` (comma list), ``startingOffsets`` (``earliest``,
default, or ``latest``), ``maxOffsetsPerTrigger``, ``includeHeaders``, ``pollTimeoutMs``.

Offsets: ``{"<topic>": {"<partition>": next_offset}}`` (string keys, sorted), the next offset
to read per partition, as Spark's own Kafka source keeps them. The checkpoint owns them; nothing
is committed to Kafka. A partition that appears later starts at its earliest offset.
Batches are planned on the driver (``end_offsets``) and read on executors, one input partition
per Kafka partition with new records, each reading exactly ``[start, end)``; a restarted query
re-reads an uncommitted batch identically. ``trigger(availableNow=True)`` is supported.
"""

# Spark's data source API names its methods in camelCase.
# ruff: noqa: N802

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as sf
from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import (
    ReadAllAvailable,
    ReadLimit,
    ReadMaxRows,
    SupportsTriggerAvailableNow,
)
from pyspark.sql.types import StructType

from spark_receiver.events import COLUMNS, KNOWN_ATTRIBUTES

__all__ = ["KAFKA_SCHEMA", "BeatsKafkaDataSource", "events_from_json", "parse_kafka"]

KAFKA_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, "
    "timestamp timestamp, timestampType int"
)
KAFKA_HEADERS = "headers array<struct<key: string, value: binary>>"
Offsets = dict[str, dict[str, int]]
_MAX_IDLE_POLLS = 15


def events_from_json(json_text: Column) -> list[Column]:
    """Columns of :data:`spark_receiver.events.EVENT_SCHEMA` from a CloudEvent JSON column."""
    variant = sf.try_parse_json(json_text)

    def attr(name: str, kind: str = "string") -> Column:
        return sf.try_variant_get(variant, f"$.{name}", kind)

    everything = sf.from_json(json_text, "map<string,string>")
    known = sf.array(*(sf.lit(key) for key in sorted(KNOWN_ATTRIBUTES)))
    columns = {
        "id": attr("id"),
        "source": attr("source"),
        "type": attr("type"),
        "subject": attr("subject"),
        "time": sf.try_to_timestamp(attr("time")),
        "datacontenttype": attr("datacontenttype"),
        "beat": attr("beat"),
        "sequence": attr("sequence", "long"),
        "partitionkey": attr("partitionkey"),
        "extensions": sf.map_filter(everything, lambda k, _: ~sf.array_contains(known, k)),
        "data": sf.to_json(attr("data", "variant")),
    }
    return [columns[name].alias(name) for name in COLUMNS]


def parse_kafka(df: DataFrame, *, keep: Sequence[str] = ()) -> DataFrame:
    """Spark Kafka-source rows (``format("kafka")`` or ``"beats-kafka"``) as event columns.

    ``keep`` names Kafka columns to carry along (for example ``("topic", "partition",
    "offset")``). Values that are not CloudEvent JSON give rows of NULLs (filter on ``id``).
    """
    text = sf.col("value").cast("string")
    return df.select(*events_from_json(text), *(sf.col(name) for name in keep))


class BeatsKafkaDataSource(DataSource):
    """``format("beats-kafka")``: see the module docstring."""

    @classmethod
    def name(cls) -> str:
        return "beats-kafka"

    def schema(self) -> str:
        if _flag(self.options.get("includeheaders")):
            return f"{KAFKA_SCHEMA}, {KAFKA_HEADERS}"
        return KAFKA_SCHEMA

    def streamReader(self, schema: StructType) -> BeatsKafkaStreamReader:
        for needed in ("kafka.bootstrap.servers", "subscribe"):
            if needed not in self.options:
                raise ValueError(f'format("beats-kafka") needs .option("{needed}", ...)')
        return BeatsKafkaStreamReader({key.lower(): value for key, value in self.options.items()})


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes")


@dataclass(frozen=True)
class KafkaRange(InputPartition):
    """Records ``[start, end)`` of one topic partition (plain data: pickled to executors)."""

    bootstrap: str
    topic: str
    partition: int
    start: int
    end: int
    headers: bool
    poll_ms: int


class BeatsKafkaStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    def __init__(self, options: dict[str, str]) -> None:
        self.bootstrap = options["kafka.bootstrap.servers"]
        self.topics = sorted(t.strip() for t in options["subscribe"].split(",") if t.strip())
        self.starting = options.get("startingoffsets", "earliest")
        self.max_per_trigger = int(options.get("maxoffsetspertrigger", "0"))
        self.headers = _flag(options.get("includeheaders"))
        self.poll_ms = int(options.get("polltimeoutms", "2000"))
        self._consumer: Any = None
        self._target: Offsets | None = None

    def _client(self) -> Any:
        if self._consumer is None:
            self._consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None
            )
        return self._consumer

    def _partitions(self) -> list[Any]:
        consumer = self._client()
        found = []
        for topic in self.topics:
            for partition in sorted(consumer.partitions_for_topic(topic) or ()):
                found.append(TopicPartition(topic, partition))
        return found

    def _end_offsets(self) -> Offsets:
        """The next offset per partition: ``end_offsets``, confirmed by a fetch's high
        watermark (some Kafka-protocol brokers, tansu among them, under-report the end)."""
        partitions = self._partitions()
        if not partitions:
            return {}
        consumer = self._client()
        ends = consumer.end_offsets(partitions)
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, max(ends[tp] - 1, 0))
        marks = _high_watermarks(consumer, partitions, self.poll_ms)
        return _offsets({(tp.topic, tp.partition): max(ends[tp], marks[tp]) for tp in partitions})

    def initialOffset(self) -> Offsets:
        if self.starting == "latest":
            return self._end_offsets()
        partitions = self._partitions()
        begins = self._client().beginning_offsets(partitions) if partitions else {}
        return _offsets({(tp.topic, tp.partition): begins[tp] for tp in partitions})

    def prepareForTriggerAvailableNow(self) -> None:
        self._target = self._end_offsets()

    def getDefaultReadLimit(self) -> ReadLimit:
        if self.max_per_trigger > 0:
            return ReadMaxRows(self.max_per_trigger)
        return ReadAllAvailable()

    def latestOffset(self, start: Offsets, limit: ReadLimit) -> Offsets:
        latest = self._target if self._target is not None else self._end_offsets()
        budget = limit.max_rows if isinstance(limit, ReadMaxRows) else None
        return _capped(start, latest, budget)

    def partitions(self, start: Offsets, end: Offsets) -> Sequence[KafkaRange]:
        ranges = []
        for topic, ends in sorted(end.items()):
            for partition, stop in sorted(ends.items(), key=lambda kv: int(kv[0])):
                begin = start.get(topic, {}).get(partition, 0)
                if stop > begin:
                    ranges.append(
                        KafkaRange(
                            self.bootstrap,
                            topic,
                            int(partition),
                            begin,
                            stop,
                            self.headers,
                            self.poll_ms,
                        )
                    )
        return ranges

    def read(self, partition: InputPartition) -> Iterator[tuple[Any, ...]]:
        assert isinstance(partition, KafkaRange)
        return iter(read_partition(partition))

    def commit(self, end: Offsets) -> None:
        """Nothing to do: the checkpoint owns the offsets."""

    def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def _high_watermarks(consumer: Any, partitions: list[Any], timeout_ms: int) -> dict[Any, int]:
    deadline = time.monotonic() + timeout_ms / 1000
    marks: dict[Any, int] = {}
    while len(marks) < len(partitions) and time.monotonic() < deadline:
        consumer.poll(timeout_ms=100, max_records=1)
        for tp in partitions:
            mark = consumer.highwater(tp)
            if mark is not None:
                marks[tp] = mark
    return {tp: marks.get(tp, 0) for tp in partitions}


def _offsets(found: dict[tuple[str, int], int]) -> Offsets:
    result: Offsets = {}
    for (topic, partition), offset in sorted(found.items()):
        result.setdefault(topic, {})[str(partition)] = int(offset)
    return result


def _capped(start: Offsets, latest: Offsets, budget: int | None) -> Offsets:
    """``latest``, or for a row budget, an even share of it per partition with new records."""
    pending = {
        (topic, p): (start.get(topic, {}).get(p, 0), end)
        for topic, ends in latest.items()
        for p, end in ends.items()
    }
    result: Offsets = {t: dict(ends) for t, ends in start.items()}
    waiting = sorted(k for k, (lo, hi) in pending.items() if hi > lo)
    left = budget
    for index, key in enumerate(waiting):
        lo, hi = pending[key]
        if left is not None:
            share = max(1, left // (len(waiting) - index)) if left > 0 else 0
            hi = min(hi, lo + share)
            left -= hi - lo
        result.setdefault(key[0], {})[key[1]] = hi
    for (topic, p), (lo, _) in pending.items():
        result.setdefault(topic, {}).setdefault(p, lo)
    return {
        t: dict(sorted(ends.items(), key=lambda kv: int(kv[0])))
        for t, ends in sorted(result.items())
    }


def read_partition(part: KafkaRange) -> list[tuple[Any, ...]]:
    """Executor side: records ``[start, end)`` of one partition, in Spark's Kafka row shape."""
    consumer = KafkaConsumer(
        bootstrap_servers=part.bootstrap, enable_auto_commit=False, group_id=None
    )
    rows: list[tuple[Any, ...]] = []
    try:
        tp = TopicPartition(part.topic, part.partition)
        consumer.assign([tp])
        consumer.seek(tp, part.start)
        position, idle = part.start, 0
        while position < part.end:
            batch = consumer.poll(timeout_ms=part.poll_ms).get(tp, [])
            rows.extend(_row(r, part.headers) for r in batch if part.start <= r.offset < part.end)
            position = max(position, consumer.position(tp))
            idle = 0 if batch else idle + 1
            if idle > _MAX_IDLE_POLLS:
                raise RuntimeError(
                    f"{part.topic}[{part.partition}] stops at {position} < {part.end}"
                )
    finally:
        consumer.close()
    return rows


def _row(record: Any, headers: bool) -> tuple[Any, ...]:
    stamp = datetime.fromtimestamp(record.timestamp / 1000, tz=UTC)
    row = (
        record.key,
        record.value,
        record.topic,
        record.partition,
        record.offset,
        stamp,
        record.timestamp_type,
    )
    if headers:
        return (*row, [(key, value) for key, value in record.headers or ()])
    return row
