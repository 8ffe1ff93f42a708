"""Benchmark: events per second into Spark micro-batches from ``spark_receiver``'s sources.

What runs, in this process: a kernel beat (uvicorn on loopback, its log holding N events of
about 400 bytes, its Kafka forwarder producing them to a tansu broker) and a local[2]
SparkSession. Measured, with same-run baselines:

* ``spark_sse_per_s``: ``format("beats")`` on the beat's SSE feed, ``maxEventsPerBatch`` N/4,
  trigger as fast as possible, a ``foreachBatch`` sink that counts each batch's rows (so every
  row crosses into Spark). Steady state: rows after the first batch divided by the time from the
  end of the first batch to the end of the last (the first batch carries the query's start-up,
  reported apart as ``spark_sse_first_batch_s``);
* ``spark_kafka_per_s``: the same for ``format("beats-kafka")`` (``maxOffsetsPerTrigger`` N/4)
  on the beat's topic;
* baselines: ``baseline_bare_httpx_sse_per_s``, a bare httpx-sse reader of the same SSE feed
  that parses each event's JSON (the ceiling for reading this stream in Python), and
  ``baseline_bare_kafka_python_per_s``, a bare kafka-python consumer of the same topic;
* ``connector_socket_per_s``: the FIWARE PySpark connector (0.0.10, its HTTP endpoint → socket
  → Spark Streaming path, see ``bench/fiware_path.py``), small notifications from 8 senders,
  delivered entities per second — when the connector is installed (``make bench`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from bench.profiling import flame
from common.service import Beat
from common.settings import BeatSettings
from tests.brokers import KafkaBroker
from tests.support import IdleSource, eventually, free_port, make_events, run_beat

__all__ = ["run"]

ROOT = Path(__file__).resolve().parents[1]


class _Timing:
    """A counting ``foreachBatch`` sink that notes when each batch ended."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, int]] = []
        self.lock = threading.Lock()

    def __call__(self, df: Any, batch_id: int) -> None:
        rows = df.count()
        with self.lock:
            self.marks.append((time.perf_counter(), rows))

    def total(self) -> int:
        with self.lock:
            return sum(rows for _, rows in self.marks)

    def figures(self, started: float) -> dict[str, float]:
        marks = [m for m in self.marks if m[1] > 0]
        steady_rows = sum(rows for _, rows in marks[1:])
        steady_time = marks[-1][0] - marks[0][0] if len(marks) > 1 else float("nan")
        return {
            "per_s": round(steady_rows / steady_time) if steady_rows else 0,
            "first_batch_s": round(marks[0][0] - started, 1),
            "end_to_end_per_s": round(self.total() / (marks[-1][0] - started)),
            "batches": len(marks),
        }


def _spark() -> Any:
    from pyspark.sql import SparkSession

    from spark_receiver import register

    path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), path) if p)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("bench-spark-source")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    register(spark)
    return spark


async def _spark_rate(spark: Any, source: Any, count: int, workdir: Path) -> dict[str, float]:
    sink = _Timing()

    def begin() -> Any:
        return (
            source(spark)
            .load()
            .writeStream.foreachBatch(sink)
            .option("checkpointLocation", tempfile.mkdtemp(dir=workdir))
            .start()
        )

    started = time.perf_counter()
    query = await asyncio.to_thread(begin)
    try:
        await eventually(lambda: sink.total() >= count, timeout=300, interval=0.1)
    finally:
        await asyncio.to_thread(query.stop)
    return sink.figures(started)


async def _bare_sse(url: str, count: int) -> float:
    seen = 0
    async with (
        httpx.AsyncClient(timeout=60) as client,
        aconnect_sse(client, "GET", url, headers={"Last-Event-ID": "0"}) as source,
    ):
        started = time.perf_counter()
        async for sse in source.aiter_sse():
            if sse.id:
                json.loads(sse.data)
                seen += 1
                if seen == count:
                    return count / (time.perf_counter() - started)
    raise RuntimeError("stream ended early")


def _bare_kafka(bootstrap: str, topic: str, count: int) -> float:
    from kafka import KafkaConsumer  # type: ignore[import-untyped,import-not-found,unused-ignore]

    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    try:
        seen, started = 0, time.perf_counter()
        while seen < count:
            for records in consumer.poll(timeout_ms=1000).values():
                seen += len(records)
        return count / (time.perf_counter() - started)
    finally:
        consumer.close()


async def _connector(workdir: Path, count: int) -> dict[str, Any]:
    """The FIWARE PySpark connector's socket path (its own process), as bench/fiware_path."""
    try:
        import fpc  # noqa: F401

        from bench.fiware_path import _fpc_case, _start_fpc, _wait_for_fpc, _write_bodies
    except ImportError:
        return {"connector_socket_per_s": None, "connector_note": "not installed"}
    port, out = free_port(), workdir / "fpc.count"
    process = await _start_fpc(port, out)
    try:
        await _wait_for_fpc(port, out)
        bodies = _write_bodies(workdir, "small", 0, count, 8)
        result = await _fpc_case(port, out, bodies, 8, count)
    finally:
        process.kill()
        await process.wait()
    return {
        "connector_socket_per_s": round(result["per_s"]),
        "connector_delivered": result["delivered"],
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


async def run(*, count: int = 20000, connector_count: int = 400) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-spark-"))
    (workdir / "kafka").mkdir()
    kafka = KafkaBroker(workdir / "kafka")
    kafka.start()
    settings = BeatSettings(
        port=free_port(), data_dir=workdir / "beat", kafka_bootstrap=kafka.bootstrap,
        kafka_idempotence=False, sse_queue_size=count * 2, log_level="error",
    )  # fmt: skip
    beat = Beat(name="test", settings=settings, source=IdleSource())
    batch = str(max(count // 4, 1000))
    results: dict[str, Any] = {"events": count, "batch": int(batch), "event_bytes": 0}
    spark = None
    try:
        async with run_beat(beat) as base:
            events = make_events(count, pad=300)
            results["event_bytes"] = len(events[0].to_json_with_sequence(1))
            for i in range(0, count, 1000):
                await beat.pipeline.commit(events[i : i + 1000])
            await eventually(lambda: beat.forwarder is not None and beat.forwarder.lag == 0,
                             timeout=120)  # fmt: skip
            url, topic = f"{base}/events/c", "beats.test.c"
            bare_sse = await _bare_sse(url, count)
            bare_kafka = await asyncio.to_thread(_bare_kafka, kafka.bootstrap, topic, count)
            spark = await asyncio.to_thread(_spark)

            def sse(s: Any) -> Any:
                return (
                    s.readStream.format("beats")
                    .option("url", url)
                    .option("maxEventsPerBatch", batch)
                )

            def kafka_source(s: Any) -> Any:
                return (
                    s.readStream.format("beats-kafka")
                    .option("kafka.bootstrap.servers", kafka.bootstrap)
                    .option("subscribe", topic)
                    .option("maxOffsetsPerTrigger", batch)
                )

            warm = await _spark_rate(spark, sse, count, workdir)  # JIT and worker warm-up
            with flame(os.getpid(), "spark_source_sse", subprocesses=True):
                on_sse = await _spark_rate(spark, sse, count, workdir)
            with flame(os.getpid(), "spark_source_kafka", subprocesses=True):
                on_kafka = await _spark_rate(spark, kafka_source, count, workdir)
    finally:
        if spark is not None:
            await asyncio.to_thread(spark.stop)
        kafka.kill()
    connector = await _connector(workdir, connector_count)
    results.update(
        {
            "baseline_bare_httpx_sse_per_s": round(bare_sse),
            "baseline_bare_kafka_python_per_s": round(bare_kafka),
            "spark_sse_per_s": on_sse["per_s"],
            "spark_sse_first_batch_s": on_sse["first_batch_s"],
            "spark_sse_end_to_end_per_s": on_sse["end_to_end_per_s"],
            "spark_sse_cold_first_batch_s": warm["first_batch_s"],
            "spark_kafka_per_s": on_kafka["per_s"],
            "spark_kafka_first_batch_s": on_kafka["first_batch_s"],
            "spark_kafka_end_to_end_per_s": on_kafka["end_to_end_per_s"],
            **connector,
            "ratio_sse_to_bare": _ratio(on_sse["per_s"], bare_sse),
            "ratio_kafka_to_bare": _ratio(on_kafka["per_s"], bare_kafka),
            "ratio_sse_to_connector": _ratio(on_sse["per_s"], connector["connector_socket_per_s"]),
        }
    )
    return results


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        print(json.dumps(asyncio.run(run()), indent=2))
