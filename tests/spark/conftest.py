"""One local SparkSession for the whole test session (starting one costs 10 to 20 s here).

Spark tests are marked ``spark`` and ``slow`` (``make test-quick`` skips them); they are not
collected at all when pyspark is not installed. The repository root goes on the Python
workers' ``PYTHONPATH`` so that they import ``spark_receiver`` and ``examples`` like the driver.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

if importlib.util.find_spec("pyspark") is None:  # pragma: no cover - depends on the venv
    collect_ignore_glob = ["test_*.py"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "spark: runs a local SparkSession (pyspark)")
    # kafka-python 3.0 loads its protocol schemas with importlib.resources' legacy API
    for api in ("read_text", "open_text"):
        config.addinivalue_line("filterwarnings", f"ignore:{api} is deprecated:DeprecationWarning")


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    from pyspark.sql import SparkSession

    from spark_receiver import register

    path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), path) if p)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[2]")
        .appName("works-beats-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.memory", "1g")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.python.worker.reuse", "true")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    register(session)
    yield session
    session.stop()
