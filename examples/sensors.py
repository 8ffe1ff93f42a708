"""Seed 004: municipality sensors — running statistics per station, outliers flagged against
the known distributions, threshold alerts back into a feed, and storage.

Flow: ``beats simulate sensors`` → MQTT ``city/sensors/<station>`` → HiveMQ beat → Spark
(``format("beats")``) → per micro-batch (``foreachBatch``, :class:`SensorSink`):

* every reading is enriched with its z-scores against the seed's distributions
  (:data:`beats.hivemq.simulator.DISTRIBUTIONS`); a value more than ``threshold`` standard
  deviations from its mean is an outlier (the simulator
  injects them 5 to 8 standard deviations away);
* each outlier is an **alert**, published to MQTT ``city/alerts/<station>`` — so the HiveMQ
  beat carries the alerts as events in its feed (subscribe it to ``city/#``); the alert's
  ``id`` (``<sequence>/<metric>``) is stable, so a replayed batch's alerts can be deduplicated;
* **storage** (SQLite here; Cassandra in the compose profile is a TODO, see the README):
  ``readings`` (enriched, keyed by the event sequence), ``alerts``, and ``stats``: running count,
  sum, sum of squares, min and max per station and metric, merged from Spark's per-batch
  aggregates, so mean and standard deviation are exact at any time.

Exactly-once storage: the batch's rows, the merged statistics and the batch id are written in
one SQLite transaction; a batch id already stored is skipped (Spark replays the last batch
after a crash). Alerts are published before that commit: at least once.

Run: ``python -m examples.sensors --help``.
"""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as sf
from pyspark.sql.streaming.query import StreamingQuery

from beats.hivemq.simulator import DISTRIBUTIONS
from examples.common import publish_json
from spark_receiver import parse_data

__all__ = ["METRICS", "SensorSink", "enrich", "outliers_of", "start", "stats"]

METRICS = list(DISTRIBUTIONS)
SCHEMA = "sensor_id string, ts string, " + ", ".join(f"{m} double" for m in METRICS)
THRESHOLD = 4.5
_TABLES = """
CREATE TABLE IF NOT EXISTS readings (sequence INTEGER PRIMARY KEY, sensor_id TEXT, ts TEXT,
    values_json TEXT, outliers TEXT, max_abs_z REAL);
CREATE TABLE IF NOT EXISTS alerts (id TEXT PRIMARY KEY, sensor_id TEXT, ts TEXT, metric TEXT,
    value REAL, z REAL);
CREATE TABLE IF NOT EXISTS stats (sensor_id TEXT, metric TEXT, n INTEGER, total REAL,
    squares REAL, low REAL, high REAL, PRIMARY KEY (sensor_id, metric));
CREATE TABLE IF NOT EXISTS batches (batch_id INTEGER PRIMARY KEY);
"""


def outliers_of(values: dict[str, float], threshold: float = THRESHOLD) -> list[str]:
    """The metrics of one reading beyond ``threshold`` standard deviations (the oracle that
    the Spark job mirrors)."""
    return [
        m for m, (mean, std) in DISTRIBUTIONS.items() if abs(values[m] - mean) / std > threshold
    ]


def _z(metric: str) -> Column:
    mean, std = DISTRIBUTIONS[metric]
    return (sf.col(metric) - sf.lit(mean)) / sf.lit(std)


def enrich(events: DataFrame, threshold: float = THRESHOLD) -> DataFrame:
    """Readings (subject ``city/sensors/...``) with z-scores and the list of outlier metrics."""
    readings = parse_data(events.where("subject LIKE 'city/sensors/%'"), SCHEMA).select(
        "sequence", "payload.*"
    )
    zs = [sf.abs(_z(m)) for m in METRICS]
    flagged = [sf.when(z > threshold, sf.lit(m)) for z, m in zip(zs, METRICS, strict=True)]
    enriched: DataFrame = readings.withColumn(
        "outliers", sf.filter(sf.array(*flagged), lambda x: x.isNotNull())
    ).withColumn("max_abs_z", sf.greatest(*zs))
    return enriched


def stats(batch: DataFrame) -> DataFrame:
    """Per-batch aggregates per station and metric (merged into the running totals)."""
    long = batch.select(
        "sensor_id",
        sf.explode(
            sf.array(*(sf.struct(sf.lit(m).alias("metric"), sf.col(m).alias("v")) for m in METRICS))
        ).alias("m"),
    ).select("sensor_id", "m.metric", "m.v")
    return long.groupBy("sensor_id", "metric").agg(
        sf.count("v").alias("n"),
        sf.sum("v").alias("total"),
        sf.sum(sf.col("v") * sf.col("v")).alias("squares"),
        sf.min("v").alias("low"),
        sf.max("v").alias("high"),
    )


class SensorSink:
    """``foreachBatch`` sink: alerts to MQTT, then readings + stats + batch id in one SQLite
    transaction (skipped when the batch id is already stored)."""

    def __init__(self, db: Path, *, mqtt_url: str, alert_prefix: str = "city/alerts") -> None:
        self.db = db
        self.mqtt_url = mqtt_url
        self.alert_prefix = alert_prefix
        with closing(sqlite3.connect(db)) as conn:
            conn.executescript(_TABLES)

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        with closing(sqlite3.connect(self.db)) as conn:
            if conn.execute("SELECT 1 FROM batches WHERE batch_id = ?", (batch_id,)).fetchone():
                return
        rows = [row.asDict() for row in batch.collect()]
        alerts = list(self._alerts(rows))
        publish_json(self.mqtt_url, ((f"{self.alert_prefix}/{a['sensor_id']}", a) for a in alerts))
        totals = [r.asDict() for r in stats(batch).collect()] if rows else []
        with closing(sqlite3.connect(self.db)) as conn, conn:
            self._store(conn, rows, alerts, totals)
            conn.execute("INSERT INTO batches VALUES (?)", (batch_id,))

    def _alerts(self, rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for row in rows:
            for metric in row["outliers"]:
                mean, std = DISTRIBUTIONS[metric]
                yield {
                    "id": f"{row['sequence']}/{metric}",
                    "sensor_id": row["sensor_id"],
                    "ts": row["ts"],
                    "metric": metric,
                    "value": row[metric],
                    "z": round((row[metric] - mean) / std, 3),
                    "threshold": THRESHOLD,
                }

    @staticmethod
    def _store(
        conn: sqlite3.Connection,
        rows: list[dict[str, Any]],
        alerts: list[dict[str, Any]],
        totals: list[dict[str, Any]],
    ) -> None:
        import json

        conn.executemany(
            "INSERT OR REPLACE INTO readings VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    r["sequence"],
                    r["sensor_id"],
                    r["ts"],
                    json.dumps({m: r[m] for m in METRICS}),
                    ",".join(r["outliers"]),
                    r["max_abs_z"],
                )
                for r in rows
            ],
        )
        conn.executemany(
            "INSERT OR REPLACE INTO alerts VALUES (?, ?, ?, ?, ?, ?)",
            [(a["id"], a["sensor_id"], a["ts"], a["metric"], a["value"], a["z"]) for a in alerts],
        )
        conn.executemany(
            """INSERT INTO stats VALUES (:sensor_id, :metric, :n, :total, :squares, :low, :high)
            ON CONFLICT (sensor_id, metric) DO UPDATE SET n = n + excluded.n,
            total = total + excluded.total, squares = squares + excluded.squares,
            low = min(low, excluded.low), high = max(high, excluded.high)""",
            totals,
        )


def start(
    spark: Any,
    *,
    feed_url: str,
    mqtt_url: str,
    db: Path,
    checkpoint: Path,
    trigger: str = "2 seconds",
) -> StreamingQuery:
    source = spark.readStream.format("beats").option("url", feed_url).load()
    return (
        enrich(source)
        .writeStream.foreachBatch(SensorSink(db, mqtt_url=mqtt_url))
        .option("checkpointLocation", str(checkpoint))
        .trigger(processingTime=trigger)
        .start()
    )


def main() -> None:
    from examples.common import local_spark

    parser = argparse.ArgumentParser(prog="python -m examples.sensors", description=__doc__)
    parser.add_argument("--feed", default="http://127.0.0.1:8101/events/messages")
    parser.add_argument("--mqtt-url", default="mqtt://127.0.0.1:1884")
    parser.add_argument("--db", type=Path, default=Path("data/examples/sensors.sqlite"))
    parser.add_argument("--checkpoint", type=Path, default=Path("data/examples/sensors"))
    args = parser.parse_args()
    args.db.parent.mkdir(parents=True, exist_ok=True)
    spark = local_spark("seed-004-sensors")
    query = start(
        spark, feed_url=args.feed, mqtt_url=args.mqtt_url, db=args.db, checkpoint=args.checkpoint
    )
    query.awaitTermination()


if __name__ == "__main__":
    main()
