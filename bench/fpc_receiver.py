"""The FIWARE PySpark connector's receiver (fiware-pyspark-connector 0.0.10), for comparison.

Run as its own process by ``bench/fiware_path.py``: binds the connector's HTTP endpoint on the
given port, runs its Spark Streaming job (local[2], 1 s batches) and writes the running number
of entities that reached Spark into ``--out`` after every batch. The connector is installed
into the bench environment only (``pip install --no-deps fiware-pyspark-connector==0.0.10``);
it is not a dependency of the project.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--socket-port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from fpc import connector
    from pyspark import SparkConf, SparkContext, StorageLevel

    conf = (
        SparkConf().setMaster("local[2]").setAppName("fpc-bench").set("spark.ui.enabled", "false")
    )
    sc = SparkContext(conf=conf)
    sc.setLogLevel("ERROR")
    connector.RECV_SINGLETON.http_address = "127.0.0.1"
    connector.RECV_SINGLETON.http_port = args.port
    connector.RECV_SINGLETON.socket_address = "127.0.0.1"
    connector.RECV_SINGLETON.socket_port = args.socket_port
    events, ssc = connector.Prime(sc, 1, StorageLevel.MEMORY_AND_DISK)
    total = [0]

    def count(rdd: Any) -> None:
        total[0] += rdd.map(lambda event: len(event.entities)).sum() if not rdd.isEmpty() else 0
        args.out.write_text(str(total[0]))

    args.out.write_text("0")
    events.foreachRDD(count)
    ssc.start()
    ssc.awaitTermination()


if __name__ == "__main__":
    main()
