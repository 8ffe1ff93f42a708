"""Ditto: connected cars whose engine temperature goes over a threshold.

Flow: Eclipse Ditto (or the Ditto emulator's connected cars) → Ditto beat ``/events/twin`` →
Spark (``format("beats")``) → the ``modified`` events of the ``engine`` feature's
``temperature`` property above ``threshold`` → :class:`AlertStore`: one row per alert in
SQLite, keyed by ``(thing_id, revision)`` — a twin revision is unique, so a batch Spark replays
after a crash stores nothing twice.

Run: ``python -m examples.twin_alerts --help``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql.streaming.query import StreamingQuery

from examples.common import SqliteBatchSink
from spark_receiver import parse_data

__all__ = ["THRESHOLD", "AlertStore", "overheated", "start"]

THRESHOLD = 100.0
SCHEMA = "thing_id string, revision long, feature_id string, property_path string, value double"


def overheated(events: DataFrame, threshold: float = THRESHOLD) -> DataFrame:
    """``thing_id, revision, time, temperature`` of every engine temperature over ``threshold``."""
    changes = parse_data(events.where("type = 'beats.ditto.twin.modified'"), SCHEMA)
    return (
        changes.where("payload.feature_id = 'engine' AND payload.property_path = 'temperature'")
        .select(
            "payload.thing_id",
            "payload.revision",
            "time",
            changes["payload.value"].alias("temperature"),
        )
        .where(f"temperature > {threshold}")
    )


class AlertStore(SqliteBatchSink):
    """``foreachBatch``: the batch's alerts into SQLite (idempotent by twin revision)."""

    table = (
        "alerts (thing_id TEXT, revision INTEGER, time TEXT, temperature REAL, "
        "PRIMARY KEY (thing_id, revision))"
    )
    insert = "INSERT OR IGNORE INTO alerts VALUES (?, ?, ?, ?)"

    def rows(self, df: DataFrame) -> list[tuple[Any, ...]]:
        return [
            (r["thing_id"], r["revision"], r["time"] and r["time"].isoformat(), r["temperature"])
            for r in df.collect()
        ]


def start(
    spark: Any, *, feed_url: str, db: Path, checkpoint: Path, trigger: str = "2 seconds"
) -> StreamingQuery:
    source = spark.readStream.format("beats").option("url", feed_url).load()
    return (
        overheated(source)
        .writeStream.foreachBatch(AlertStore(db))
        .option("checkpointLocation", str(checkpoint))
        .trigger(processingTime=trigger)
        .start()
    )


def main() -> None:
    from examples.common import local_spark

    parser = argparse.ArgumentParser(prog="python -m examples.twin_alerts", description=__doc__)
    parser.add_argument("--feed", default="http://127.0.0.1:8104/events/twin")
    parser.add_argument("--db", type=Path, default=Path("data/examples/twin-alerts.sqlite"))
    parser.add_argument("--checkpoint", type=Path, default=Path("data/examples/twin-ckpt"))
    args = parser.parse_args()
    spark = local_spark("works-beats-twin-alerts")
    start(spark, feed_url=args.feed, db=args.db, checkpoint=args.checkpoint).awaitTermination()


if __name__ == "__main__":
    main()
