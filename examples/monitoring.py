"""Seed 002: real-time IoT monitoring — ERROR events per ``error_code`` in 1-minute tumbling
windows with a 3-second watermark, on the HiveMQ beat's feed, republished to Kafka.

Pieces:

* :func:`generate`: seeded monitoring events ``error_code, ts, type, application, version,
  description`` (``ts`` in epoch milliseconds, slightly out of order: up to ``jitter_ms`` late,
  which the 3 s watermark tolerates);
* :func:`publish`: sends them through MQTT (``monitoring/<application>``) to the HiveMQ beat;
* :func:`error_counts`: the streaming SQL job over ``format("beats")``::

      SELECT window.start AS window_start, window.end AS window_end, error_code,
             COUNT(*) AS count
      FROM monitoring WATERMARK event_time DELAY OF INTERVAL 3 SECONDS
      WHERE type = 'ERROR'
      GROUP BY window(event_time, '1 minute'), error_code

* :func:`start` runs it in append mode (a window is emitted once, when the watermark passes its
  end) and produces each result to the Kafka topic ``error-count-stream`` (key
  ``<window_start>/<error_code>``);
* :func:`expected_counts`: the independent Python count of the same events (the test's oracle).

Run: ``python -m examples.monitoring --help``.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming.query import StreamingQuery

from spark_receiver import KafkaBatchWriter, parse_data

__all__ = ["error_counts", "expected_counts", "generate", "publish", "start"]

SCHEMA = (
    "error_code string, ts long, type string, application string, version string, "
    "description string"
)
CODES = ("E100", "E200", "E300", "E404", "E500")
APPLICATIONS = ("billing", "gateway", "scheduler")
TYPES = ("ERROR", "WARNING", "INFO")
TOPIC = "error-count-stream"
WINDOW_MS, DELAY_MS = 60_000, 3_000


def generate(
    count: int,
    *,
    seed: int = 2,
    start_ms: int = 1_767_225_600_000,
    step_ms: int = 250,
    jitter_ms: int = 2_000,
) -> list[dict[str, Any]]:
    """``count`` events, one every ``step_ms`` of event time, each up to ``jitter_ms`` late."""
    rng = random.Random(seed)
    events = []
    for n in range(count):
        kind = rng.choices(TYPES, weights=(4, 3, 3))[0]
        code = rng.choice(CODES)
        events.append(
            {
                "error_code": code,
                "ts": start_ms + n * step_ms - rng.randint(0, jitter_ms),
                "type": kind,
                "application": rng.choice(APPLICATIONS),
                "version": f"1.{rng.randint(0, 3)}",
                "description": f"{kind.lower()} {code} #{n}",
            }
        )
    return events


def expected_counts(events: list[dict[str, Any]]) -> Counter[tuple[int, str]]:
    """ERROR counts per (window start ms, code) for the windows the final watermark closed
    (end <= max ts - 3 s). With lateness below the 3 s delay no event is dropped as late."""
    watermark = max(e["ts"] for e in events) - DELAY_MS
    counts: Counter[tuple[int, str]] = Counter()
    for event in events:
        start = event["ts"] - event["ts"] % WINDOW_MS
        if event["type"] == "ERROR" and start + WINDOW_MS <= watermark:
            counts[(start, event["error_code"])] += 1
    return counts


def publish(mqtt_url: str, events: list[dict[str, Any]], *, prefix: str = "monitoring") -> int:
    from examples.common import publish_json

    return publish_json(mqtt_url, ((f"{prefix}/{e['application']}", e) for e in events))


def error_counts(spark: SparkSession, events: DataFrame, *, view: str = "monitoring") -> DataFrame:
    """The seed's windowed SQL over beats events whose subject is ``monitoring/...``."""
    monitoring = (
        parse_data(events.where("subject LIKE 'monitoring/%'"), SCHEMA)
        .select("payload.*")
        .selectExpr("*", "timestamp_millis(ts) AS event_time")
    )
    monitoring.createOrReplaceTempView(view)
    return spark.sql(
        f"""
        SELECT window.start AS window_start, window.end AS window_end, error_code,
               COUNT(*) AS count
        FROM {view} WATERMARK event_time DELAY OF INTERVAL 3 SECONDS
        WHERE type = 'ERROR'
        GROUP BY window(event_time, '1 minute'), error_code
        """
    )


def start(
    spark: SparkSession,
    *,
    feed_url: str,
    kafka_bootstrap: str,
    checkpoint: Path,
    topic: str = TOPIC,
    trigger: str = "2 seconds",
    idempotence: bool = True,
) -> StreamingQuery:
    """Run the job: beats feed → windowed counts → Kafka ``topic`` (idempotent per batch)."""
    source = spark.readStream.format("beats").option("url", feed_url).load()
    counts = error_counts(spark, source).selectExpr(
        "date_format(window_start, \"yyyy-MM-dd'T'HH:mm:ss'Z'\") AS window_start",
        "date_format(window_end, \"yyyy-MM-dd'T'HH:mm:ss'Z'\") AS window_end",
        "error_code",
        "count",
        "concat(date_format(window_start, \"yyyy-MM-dd'T'HH:mm:ss'Z'\"), '/', error_code) AS key",
    )
    sink = KafkaBatchWriter(
        kafka_bootstrap,
        topic,
        ledger=checkpoint / "sinks" / "kafka.batches",
        key="key",
        idempotence=idempotence,
    )
    return (
        counts.writeStream.outputMode("append")
        .foreachBatch(sink)
        .option("checkpointLocation", str(checkpoint / "query"))
        .trigger(processingTime=trigger)
        .start()
    )


def window_key(start_ms: int, code: str) -> str:
    stamp = datetime.fromtimestamp(start_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{stamp}/{code}"


def main() -> None:
    from examples.common import local_spark

    parser = argparse.ArgumentParser(prog="python -m examples.monitoring", description=__doc__)
    parser.add_argument("--feed", default="http://127.0.0.1:8101/events/messages")
    parser.add_argument("--kafka-bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--checkpoint", type=Path, default=Path("data/examples/monitoring"))
    parser.add_argument("--mqtt-url", default="mqtt://127.0.0.1:1884")
    parser.add_argument("--generate", type=int, default=0, help="publish N events first")
    args = parser.parse_args()
    if args.generate:
        events = generate(args.generate)
        print(f"published {publish(args.mqtt_url, events)} monitoring events")
    spark = local_spark("seed-002-monitoring")
    query = start(
        spark, feed_url=args.feed, kafka_bootstrap=args.kafka_bootstrap, checkpoint=args.checkpoint
    )
    query.awaitTermination()


if __name__ == "__main__":
    main()
