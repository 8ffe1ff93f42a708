"""``format("beats")`` against a real kernel beat: columns, parse_data, and a restart from the
checkpoint (with a crash between offset log and commit, and the beat restarted) that resumes
with no gap and no duplicate."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from common.envelope import new_event
from common.service import Beat
from spark_receiver import COLUMNS, EVENT_SCHEMA, parse_data
from tests.spark.streams import Collector, stop, wait_rows
from tests.support import make_beat, make_events, run_beat

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def start(spark: Any, url: str, sink: Collector, checkpoint: Path, **options: str) -> Any:
    reader = spark.readStream.format("beats").option("url", url)
    for key, value in options.items():
        reader = reader.option(key, value)
    events = parse_data(reader.load(), "n long, pad string")
    return (
        events.writeStream.foreachBatch(sink)
        .option("checkpointLocation", str(checkpoint))
        .trigger(processingTime="500 milliseconds")
        .start()
    )


def restarted(beat: Beat) -> Beat:
    """The same beat (port, log) as a new process would build it."""
    return Beat(name=beat.name, settings=beat.settings, source=type(beat.source)())


async def test_rows_carry_the_cloudevent_attributes(spark: Any, tmp_path: Path) -> None:
    beat = make_beat(tmp_path)
    stamp = dt.datetime(2026, 5, 1, 12, 0, 30, 250000, tzinfo=dt.UTC)
    special = new_event(
        beat="test",
        type="beats.test.special",
        source="mqtt://broker:1883",
        channel="c",
        partitionkey="city/x",
        subject="city/x",
        time=stamp,
        data={"n": 99, "pad": "p"},
        mqttqos=1,
        tlp="amber",
        mqttuserproperties=[["a", "1"]],
    )
    async with run_beat(beat) as base:
        await beat.pipeline.commit([*make_events(3), special, *make_events(2, channel="other")])
        sink = Collector()
        query = await asyncio.to_thread(start, spark, f"{base}/events/c", sink, tmp_path / "ckpt")
        try:
            rows = await wait_rows(sink, 4, query=query)
        finally:
            await stop(query)
    assert [r["sequence"] for r in rows] == [1, 2, 3, 4]
    assert [r["payload"]["n"] for r in rows] == [0, 1, 2, 99]
    last = rows[-1]
    assert last["id"] == special.id and last["type"] == "beats.test.special"
    assert last["source"] == "mqtt://broker:1883" and last["subject"] == "city/x"
    assert last["time"] == stamp.replace(tzinfo=None)  # session time zone UTC
    assert last["beat"] == "test" and last["partitionkey"] == "city/x"
    assert last["datacontenttype"] == "application/json"
    assert last["extensions"] == {
        "dataschema": "urn:works-beats:schema:beats.test.special",
        "mqttqos": "1",
        "tlp": "amber",
        "mqttuserproperties": '[["a","1"]]',
    }
    assert last["data"] == '{"n":99,"pad":"p"}'


async def test_restart_from_checkpoint_has_no_gap_and_no_duplicate(
    spark: Any, tmp_path: Path
) -> None:
    checkpoint, limit = tmp_path / "ckpt", {"maxEventsPerBatch": "40"}
    beat = make_beat(tmp_path)
    async with run_beat(beat) as base:
        url = f"{base}/events/c"
        await beat.pipeline.commit(make_events(100))
        first = Collector()
        query = await asyncio.to_thread(start, spark, url, first, checkpoint, **limit)
        await wait_rows(first, 100, query=query)
        await stop(query)
    beat = restarted(beat)  # the beat restarts too; its log keeps everything
    async with run_beat(beat) as base:
        await beat.pipeline.commit(make_events(100, start=100))
        crashing = Collector(fail_on_first_rows=True)
        query = await asyncio.to_thread(start, spark, url, crashing, checkpoint, **limit)
        with pytest.raises(Exception, match="injected sink failure"):
            await asyncio.to_thread(query.awaitTermination, 90)
        resumed = Collector()
        query = await asyncio.to_thread(start, spark, url, resumed, checkpoint, **limit)
        await beat.pipeline.commit(make_events(50, start=200))
        await wait_rows(resumed, 150, query=query)
        await stop(query)
    merged = {**first.batches, **resumed.batches}  # what an idempotent-per-batch sink keeps
    sequences = [r["sequence"] for _, rows in sorted(merged.items()) for r in rows]
    assert sequences == list(range(1, 251)), "gap or duplicate across the restart"
    assert crashing.failed is not None
    crashed_id, crashed_rows = crashing.failed
    assert resumed.batches[crashed_id] == crashed_rows, "the replay differs from the original"
    assert all(len(rows) <= 40 for rows in merged.values())


def test_arrow_batches_have_the_schema_spark_expects(spark: Any) -> None:
    from pyspark.sql.pandas.types import to_arrow_schema

    from spark_receiver.events import ARROW_SCHEMA, event_to_row, rows_to_batch

    expected = to_arrow_schema(spark.createDataFrame([], EVENT_SCHEMA).schema, timezone="UTC")
    assert ARROW_SCHEMA.equals(expected)
    event = json.loads(make_events(1)[0].to_json_with_sequence(5))
    batch = rows_to_batch([event_to_row(event), event_to_row({"id": "x"})])
    assert batch.num_rows == 2 and batch.column(COLUMNS.index("sequence")).to_pylist() == [5, None]
