"""What the examples share: a local SparkSession for small machines, and MQTT publishing."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pyspark.sql import DataFrame, SparkSession

from spark_receiver import register

__all__ = ["SqliteBatchSink", "local_spark", "publish_json"]

ROOT = Path(__file__).resolve().parents[1]


def local_spark(app: str, *, cores: int = 2) -> SparkSession:
    """``local[cores]`` with the settings that matter on a small machine (see
    ``spark_receiver/README.md``), the beats sources registered, and the repository on the
    Python workers' path."""
    path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), path) if p)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName(app)
        .config("spark.sql.shuffle.partitions", str(cores))
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    register(spark)
    return spark


def publish_json(mqtt_url: str, messages: Iterable[tuple[str, Any]], *, qos: int = 1) -> int:
    """Publish ``(topic, JSON-able payload)`` pairs over one MQTT connection; returns the count.
    Blocking (paho), so it can run inside a ``foreachBatch`` sink."""
    from paho.mqtt import publish

    url = urlsplit(mqtt_url)
    batch: list[Any] = [
        (topic, json.dumps(payload, separators=(",", ":")), qos, False)
        for topic, payload in messages
    ]
    if batch:
        auth: Any = {"username": url.username, "password": url.password} if url.username else None
        publish.multiple(
            batch, hostname=url.hostname or "127.0.0.1", port=url.port or 1883, auth=auth
        )
    return len(batch)


class SqliteBatchSink:
    """A ``foreachBatch`` sink writing ``rows(df)`` with ``insert`` in one SQLite transaction.
    Replays are harmless when ``insert`` is keyed (``INSERT OR IGNORE`` / upsert)."""

    table = ""
    insert = ""

    def __init__(self, db: Path) -> None:
        self.db = db
        db.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(db)) as conn, conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {self.table}")

    def rows(self, df: DataFrame) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        rows = self.rows(df)
        with closing(sqlite3.connect(self.db)) as conn, conn:
            conn.executemany(self.insert, rows)
