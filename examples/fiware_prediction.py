"""Seed 003: the FIWARE flow — receive entity changes, predict, write the prediction back.

Flow: entities change in Orion (or the Orion emulator) → FIWARE beat ``/events/entities`` →
Spark (``format("beats")``) → per micro-batch (:class:`PredictionSink`): a scikit-learn
regressor predicts each room's temperature an hour ahead from its temperature and pressure →
:class:`spark_receiver.FiwareWriteback` → the beat's ``/writeback`` → ``/v2/op/update`` on the
broker → ``predictedTemperature`` visible on the entity.

The model is trained at start on generated data (:func:`training_data`: a known linear law
plus noise), standing in for whatever model a deployment loads. Give the FIWARE beat
``--watched-attributes temperature,pressure`` so that writing the prediction does not notify
the beat again (otherwise every prediction would come back as a change and be predicted again).

Idempotent per batch id: the write-back sink keeps a ledger (in the checkpoint directory), and
a re-sent prediction is an upsert of the same value.

Run: ``python -m examples.fiware_prediction --help``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql.streaming.query import StreamingQuery
from sklearn.linear_model import LinearRegression

from spark_receiver import FiwareWriteback, parse_data

__all__ = ["PredictionSink", "rooms", "start", "train", "training_data"]

SCHEMA = "id string, type string, values struct<temperature: double, pressure: double>"


def training_data(size: int = 500, *, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Readings ``[temperature, pressure]`` and the temperature an hour later:
    ``0.9 t + 0.02 (p - 1013) + 2.1`` plus noise (standard deviation 0.2)."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(21, 2, size), rng.integers(990, 1031, size)])
    y = 0.9 * x[:, 0] + 0.02 * (x[:, 1] - 1013) + 2.1 + rng.normal(0, 0.2, size)
    return x, y


def train() -> LinearRegression:
    return LinearRegression().fit(*training_data())


def rooms(events: DataFrame) -> DataFrame:
    """Entity changes of rooms that carry both readings: ``id, type, temperature, pressure``."""
    parsed = parse_data(events.where("type = 'beats.fiware.entity'"), SCHEMA)
    return parsed.select(
        "payload.id",
        "payload.type",
        "payload.values.temperature",
        "payload.values.pressure",
    ).where("temperature IS NOT NULL AND pressure IS NOT NULL")


class PredictionSink:
    """``foreachBatch``: predict every room of the batch and write the predictions back."""

    def __init__(self, model: Any, writeback: FiwareWriteback) -> None:
        self.model = model
        self.writeback = writeback

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        rows = df.collect()
        if not rows:
            return
        x = np.array([[r["temperature"], r["pressure"]] for r in rows], dtype=float)
        predicted = self.model.predict(x)
        results = [
            (r["id"], r["type"], round(float(p), 2)) for r, p in zip(rows, predicted, strict=True)
        ]
        out = df.sparkSession.createDataFrame(
            results, "id string, type string, predictedTemperature double"
        )
        self.writeback(out, batch_id)


def start(
    spark: Any,
    *,
    feed_url: str,
    beat_url: str,
    checkpoint: Path,
    token: str | None = None,
    trigger: str = "2 seconds",
) -> StreamingQuery:
    writeback = FiwareWriteback(beat_url, ledger=checkpoint / "writeback.ledger", token=token)
    source = spark.readStream.format("beats").option("url", feed_url).load()
    return (
        rooms(source)
        .writeStream.foreachBatch(PredictionSink(train(), writeback))
        .option("checkpointLocation", str(checkpoint / "query"))
        .trigger(processingTime=trigger)
        .start()
    )


def main() -> None:
    from examples.common import local_spark

    parser = argparse.ArgumentParser(
        prog="python -m examples.fiware_prediction", description=__doc__
    )
    parser.add_argument("--feed", default="http://127.0.0.1:8102/events/entities")
    parser.add_argument("--beat-url", default="http://127.0.0.1:8102")
    parser.add_argument("--token", default=None, help="the FIWARE beat's --writeback-token")
    parser.add_argument("--checkpoint", type=Path, default=Path("data/examples/fiware-ckpt"))
    args = parser.parse_args()
    spark = local_spark("works-beats-fiware-prediction")
    query = start(
        spark,
        feed_url=args.feed,
        beat_url=args.beat_url,
        checkpoint=args.checkpoint,
        token=args.token,
    )
    query.awaitTermination()


if __name__ == "__main__":
    main()
