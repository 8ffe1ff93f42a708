"""Helpers for streaming queries in tests: a collecting ``foreachBatch`` sink, and running
blocking Spark calls off the event loop (the beats under test are served by that loop)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from tests.support import eventually

__all__ = ["Collector", "stop", "wait_rows"]


class Collector:
    """Keeps each micro-batch's rows by batch id (a replayed batch overwrites: idempotent).

    ``fail_on_first_rows`` makes the first non-empty batch raise, simulating a crash after
    Spark logged the batch's offsets but before it committed the batch.
    """

    def __init__(self, *, fail_on_first_rows: bool = False) -> None:
        self.batches: dict[int, list[dict[str, Any]]] = {}
        self.fail = fail_on_first_rows
        self.failed: tuple[int, list[dict[str, Any]]] | None = None
        self._lock = threading.Lock()

    def __call__(self, df: Any, batch_id: int) -> None:
        rows = [row.asDict(recursive=True) for row in df.collect()]
        if rows and self.fail:
            self.fail = False
            self.failed = (batch_id, rows)
            raise RuntimeError(f"injected sink failure in batch {batch_id}")
        with self._lock:
            self.batches[batch_id] = rows

    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            return [row for _, rows in sorted(self.batches.items()) for row in rows]

    def count(self) -> int:
        return len(self.rows())


async def wait_rows(
    collector: Collector, count: int, *, query: Any = None, timeout: float = 60
) -> list[dict[str, Any]]:
    def check() -> bool:
        if query is not None and query.exception() is not None:
            raise AssertionError(f"query failed: {query.exception()}")
        return collector.count() >= count

    await eventually(check, timeout=timeout, interval=0.2, what=f"{count} rows in Spark")
    return collector.rows()


async def stop(query: Any) -> None:
    await asyncio.to_thread(query.stop)
