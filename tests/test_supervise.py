from __future__ import annotations

import asyncio

import pytest

from common.metrics import Metrics
from common.supervise import Backoff, supervise


async def test_failing_task_is_restarted_with_backoff_and_counted() -> None:
    metrics = Metrics("t")
    runs: list[float] = []

    async def flaky() -> None:
        runs.append(asyncio.get_running_loop().time())
        if len(runs) < 4:
            raise RuntimeError("boom")

    await asyncio.wait_for(
        supervise("flaky", flaky, metrics=metrics, backoff=Backoff(0.01, 0.04)), 5
    )
    assert len(runs) == 4
    assert metrics.restarts.labels("flaky")._value.get() == 3


async def test_cancellation_is_not_a_failure() -> None:
    metrics = Metrics("t")

    async def forever() -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(supervise("forever", forever, metrics=metrics))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert metrics.restarts.labels("forever")._value.get() == 0


def test_backoff_grows_to_its_ceiling_with_jitter() -> None:
    backoff = Backoff(min_delay=1.0, max_delay=8.0)
    delays = [backoff.next() for _ in range(10)]
    assert all(0.5 <= d <= 8.0 for d in delays)
    assert max(delays[5:]) > 2.0
    backoff.reset()
    assert backoff.next() <= 1.0
