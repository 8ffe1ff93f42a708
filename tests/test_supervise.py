from __future__ import annotations

import asyncio
import sys

import pytest

from common.metrics import Metrics
from common.supervise import Backoff, bounded, raise_if_cancelled, supervise


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


async def test_a_cancellation_that_wait_for_dropped_is_raised_again() -> None:
    """The race that hung the demo's shutdown: the task is cancelled just as the call it waits
    for with ``asyncio.wait_for`` completes. Python 3.11 returns the result and drops the
    cancellation; ``raise_if_cancelled`` raises it again."""
    done = asyncio.get_running_loop().create_future()
    reached: list[str] = []

    async def body() -> None:
        await asyncio.wait_for(done, 5)
        reached.append("past wait_for")
        raise_if_cancelled()
        reached.append("past the check")

    task = asyncio.create_task(body())
    await asyncio.sleep(0)  # the task waits inside wait_for
    done.set_result(None)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "past the check" not in reached
    if sys.version_info < (3, 12):
        assert reached == ["past wait_for"], "the race was not reproduced"


async def test_bounded_keeps_a_cancellation_that_arrives_as_its_call_completes() -> None:
    """:func:`bounded` (the Kafka forwarder's and the Kafka-mode gateway's calls) under the
    same race: the task ends cancelled instead of running on."""
    done = asyncio.get_running_loop().create_future()
    reached: list[str] = []

    async def body() -> None:
        await bounded(done, 5)
        reached.append("past bounded")

    task = asyncio.create_task(body())
    await asyncio.sleep(0)
    done.set_result(None)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert reached == []
