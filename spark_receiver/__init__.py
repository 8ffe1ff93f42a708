"""Works Beats feeds in Spark Structured Streaming.

::

    from spark_receiver import register, parse_data
    register(spark)
    events = (spark.readStream.format("beats")
              .option("url", "http://127.0.0.1:8101/events/messages").load())
    readings = parse_data(events, "sensor_id string, temperature double")

See ``spark_receiver/README.md``: the SSE source (:mod:`spark_receiver.source`), the Kafka
parser and the ``beats-kafka`` source (:mod:`spark_receiver.kafka`), the ``foreachBatch`` sinks
(:mod:`spark_receiver.sinks`). This package imports nothing from the beats' repository.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as sf
from pyspark.sql.types import StructType

from spark_receiver.events import COLUMNS, EVENT_SCHEMA, event_to_row
from spark_receiver.kafka import KAFKA_SCHEMA, BeatsKafkaDataSource, events_from_json, parse_kafka
from spark_receiver.sinks import BatchLedger, FiwareWriteback, KafkaBatchWriter, to_entity
from spark_receiver.source import BeatsDataSource

__all__ = [
    "COLUMNS",
    "EVENT_SCHEMA",
    "KAFKA_SCHEMA",
    "BatchLedger",
    "BeatsDataSource",
    "BeatsKafkaDataSource",
    "FiwareWriteback",
    "KafkaBatchWriter",
    "event_to_row",
    "events_from_json",
    "parse_data",
    "parse_kafka",
    "register",
    "to_entity",
]


def register(spark: SparkSession) -> None:
    """Register ``format("beats")`` and ``format("beats-kafka")`` with this session."""
    spark.dataSource.register(BeatsDataSource)
    spark.dataSource.register(BeatsKafkaDataSource)


def parse_data(
    df: DataFrame, schema: str | StructType, *, column: str = "data", into: str = "payload"
) -> DataFrame:
    """Add ``into``: the JSON text in ``column`` parsed with ``schema`` (DDL or StructType);
    NULL where it does not parse. ``parse_data(df, s).select("sequence", "payload.*")``."""
    parsed: Column = sf.from_json(sf.col(column), schema)
    return df.withColumn(into, parsed)
