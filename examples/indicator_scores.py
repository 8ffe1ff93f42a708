"""OpenCTI: indicators by score band per minute.

Flow: OpenCTI live stream (or the OpenCTI emulator) → OpenCTI beat ``/events/indicators`` →
Spark (``format("beats")``) → the ``create`` events of indicators, bucketed by the OpenCTI
score lifted by the beat (``data.opencti.score``: ``low`` < 40 ≤ ``medium`` < 70 ≤ ``high``,
``unscored`` when absent) and counted in 1-minute tumbling windows of the event time with a
1-minute watermark → :class:`CountStore`: the counts upserted into SQLite per
``(window_start, band)``. Update mode: each batch brings the new totals of the windows it
touched, so a replayed batch writes the same totals again (idempotent).

Run: ``python -m examples.indicator_scores --help``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as sf
from pyspark.sql.streaming.query import StreamingQuery

from examples.common import SqliteBatchSink
from spark_receiver import parse_data

__all__ = ["CountStore", "band", "counts", "start"]

SCHEMA = "opencti struct<score: int>, stix struct<type: string>"


def band(score: int | None) -> str:
    """The band of one score (the oracle the Spark job mirrors)."""
    if score is None:
        return "unscored"
    return "low" if score < 40 else "medium" if score < 70 else "high"


def counts(events: DataFrame) -> DataFrame:
    """``window_start, band, count`` of indicator creations per 1-minute window."""
    created = parse_data(events.where("type = 'beats.opencti.create'"), SCHEMA).where(
        "payload.stix.type = 'indicator'"
    )
    score = sf.col("payload.opencti.score")
    bands = (
        sf.when(score.isNull(), "unscored")
        .when(score < 40, "low")
        .when(score < 70, "medium")
        .otherwise("high")
    )
    return (
        created.withColumn("band", bands)
        .withWatermark("time", "1 minute")
        .groupBy(sf.window("time", "1 minute"), "band")
        .count()
        .select(sf.col("window.start").alias("window_start"), "band", "count")
    )


class CountStore(SqliteBatchSink):
    """``foreachBatch``: the batch's window totals upserted into SQLite."""

    table = (
        "indicator_counts (window_start TEXT, band TEXT, count INTEGER, "
        "PRIMARY KEY (window_start, band))"
    )
    insert = (
        "INSERT INTO indicator_counts VALUES (?, ?, ?) ON CONFLICT (window_start, band) "
        "DO UPDATE SET count = excluded.count"
    )

    def rows(self, df: DataFrame) -> list[tuple[Any, ...]]:
        return [(r["window_start"].isoformat(), r["band"], r["count"]) for r in df.collect()]


def start(
    spark: Any, *, feed_url: str, db: Path, checkpoint: Path, trigger: str = "5 seconds"
) -> StreamingQuery:
    source = spark.readStream.format("beats").option("url", feed_url).load()
    return (
        counts(source)
        .writeStream.outputMode("update")
        .foreachBatch(CountStore(db))
        .option("checkpointLocation", str(checkpoint))
        .trigger(processingTime=trigger)
        .start()
    )


def main() -> None:
    from examples.common import local_spark

    parser = argparse.ArgumentParser(
        prog="python -m examples.indicator_scores", description=__doc__
    )
    parser.add_argument("--feed", default="http://127.0.0.1:8103/events/indicators")
    parser.add_argument("--db", type=Path, default=Path("data/examples/indicators.sqlite"))
    parser.add_argument("--checkpoint", type=Path, default=Path("data/examples/indicators-ckpt"))
    args = parser.parse_args()
    spark = local_spark("works-beats-indicator-scores")
    start(spark, feed_url=args.feed, db=args.db, checkpoint=args.checkpoint).awaitTermination()


if __name__ == "__main__":
    main()
