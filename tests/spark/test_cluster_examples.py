"""The cluster examples of README.md and docs/spark.md (Spark's own Kafka source with
``parse_kafka``), run as written with two substitutions: ``format("beats-kafka")`` for
``format("kafka")``, whose JAR comes from Maven Central (not reachable here), and the test
broker's address for ``localhost:9092``; its relative paths (sinks, checkpoints) are put under
the test's directory, since Spark resolves them against the JVM's working directory, not Python's.
``beats-kafka`` gives the Kafka source's rows, so the rest of each example runs unchanged, on a
3-partition topic filled by a HiveMQ beat's forwarder.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pyspark
import pytest

from common.envelope import new_event
from common.service import Beat
from common.settings import BeatSettings
from tests.brokers import KafkaBroker
from tests.docs.examples import ROOT, Block, blocks
from tests.spark.test_kafka import create_topic
from tests.support import IdleSource, eventually, free_port, run_beat

pytestmark = [pytest.mark.spark, pytest.mark.slow]

BUILT_IN = 'format("kafka")'
EXAMPLES = [
    block
    for page in (ROOT / "README.md", ROOT / "docs" / "spark.md")
    for block in blocks(page)
    if block.language == "python" and BUILT_IN in block.text
]
SENSORS = [f"station-{n:03}" for n in range(1, 6)]  # show(5) prints five
READINGS = 120


def test_each_page_shows_the_cluster_path_and_says_where_it_is_run() -> None:
    assert sorted({b.page.name for b in EXAMPLES}) == ["README.md", "spark.md"]
    for block in EXAMPLES:
        assert block.directive is not None and block.directive[0] == "not run", block.label
        assert Path(__file__).name in block.directive[1], block.label
        packages = re.findall(r"spark-sql-kafka-0-10_2\.13:([\w.]+)", block.text)
        assert packages == [pyspark.__version__], f"{block.label}: the package of this Spark"


def reading(sensor: str, temperature: float) -> Any:
    return new_event(
        beat="hivemq",
        type="beats.hivemq.message",
        source="mqtt://broker:1883",
        channel="messages",
        partitionkey=f"city/sensors/{sensor}",
        subject=f"city/sensors/{sensor}",
        data={"sensor_id": sensor, "temperature": temperature},
    )


async def sensor_topic(tmp_path: Path, bootstrap: str) -> None:
    """``beats.hivemq.messages`` with 3 partitions, as a HiveMQ beat's forwarder fills it."""
    await asyncio.to_thread(create_topic, bootstrap, "beats.hivemq.messages", 3)
    settings = BeatSettings(
        port=free_port(), data_dir=tmp_path / "beat", kafka_bootstrap=bootstrap,
        kafka_idempotence=False, kafka_partitions=3,
    )  # fmt: skip
    beat = Beat(name="hivemq", settings=settings, source=IdleSource())
    events = [reading(SENSORS[n % len(SENSORS)], 20.0 + n % 5) for n in range(READINGS)]
    async with run_beat(beat):
        await beat.pipeline.commit(events)
        await eventually(lambda: beat.forwarder is not None and beat.forwarder.lag == 0)


_PATH = re.compile(r'(\.option\("(?:path|checkpointLocation)", |\.parquet\()"([^"/]+)"')


def run_example(block: Block, bootstrap: str, directory: Path) -> None:
    text = block.text
    assert text.count(BUILT_IN) == 1 and text.count("localhost:9092") == 1, block.label
    text = text.replace(BUILT_IN, 'format("beats-kafka")').replace("localhost:9092", bootstrap)
    text = _PATH.sub(lambda m: f'{m.group(1)}"{directory / m.group(2)}"', text)
    exec(compile(text, block.label, "exec"), {"__name__": "__main__"})


@pytest.mark.parametrize("block", EXAMPLES, ids=[b.label for b in EXAMPLES])
async def test_cluster_example_runs_on_a_multi_partition_topic(
    block: Block,
    spark: Any,
    tmp_path: Path,
    kafka: KafkaBroker,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await sensor_topic(tmp_path, kafka.bootstrap)
    before = set(ROOT.iterdir())
    await asyncio.to_thread(run_example, block, kafka.bootstrap, tmp_path)
    printed = capsys.readouterr().out
    assert all(sensor in printed for sensor in SENSORS), printed
    assert not [q.name for q in spark.streams.active], "the example left a query running"
    assert set(ROOT.iterdir()) == before, "the example wrote into the checkout"
