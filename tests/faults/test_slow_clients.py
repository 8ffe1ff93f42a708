"""Stalled SSE clients among a fast one, through the gateway: the fast client's latency is
measured with and without them, in the same run.

Each phase commits the same load (batches of events with 4 KB of data, paced) to a beat and
measures, for every event, the time from commit to its arrival at a fast client reading
``/streams/<beat>``. In the second phase ``STALLED`` more clients ask for the same stream and
never read (tiny receive buffers): the gateway must overflow and drop each of them by policy,
and the fast client's p95 latency must stay within a bound of the first phase's.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from common.client import subscribe
from gateway.service import Gateway
from tests.faults.harness import Report
from tests.gateway.support import beat_named, gateway_settings, run_gateway
from tests.support import eventually, make_events, run_beat, stalled_socket

pytestmark = pytest.mark.slow

STALLED = 20
BATCHES = 150
BATCH = 10
Commit = Callable[[list[Any]], Awaitable[Any]]


async def _phase(gateway: Gateway, base: str, commit: Commit, first: int) -> list[float]:
    """Latencies (s) of ``BATCHES`` x ``BATCH`` events committed from sequence ``first``."""
    committed: dict[int, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()
    last = first + BATCHES * BATCH - 1

    async def read() -> None:
        async for item in subscribe(f"{base}/streams/test", last_event_id=str(first - 1)):
            sequence = getattr(item, "sequence", None)
            if sequence is not None:
                latencies.append(time.monotonic() - committed[sequence])
                if sequence == last:
                    done.set()
                    return

    reader = asyncio.create_task(read())
    await eventually(lambda: len(gateway.clients) >= 1, what="the fast client")
    for n in range(BATCHES):
        start = first + n * BATCH
        stamp = time.monotonic()
        committed.update(dict.fromkeys(range(start, start + BATCH), stamp))
        await commit(make_events(BATCH, start=start, pad=4096))
        await asyncio.sleep(0.02)
    await asyncio.wait_for(done.wait(), 30)
    await reader
    return latencies


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


async def test_stalled_clients_do_not_slow_a_fast_one(tmp_path: Path) -> None:
    beat = beat_named(tmp_path, "test")
    settings = gateway_settings({"test": beat}, client_queue_size=100)
    async with run_beat(beat), run_gateway(settings) as (gateway, base):
        alone = await _phase(gateway, base, beat.pipeline.commit, 1)
        stalled = [stalled_socket(settings.port, "/streams/test") for _ in range(STALLED)]
        await eventually(lambda: len(gateway.clients) >= STALLED, what="the stalled clients")
        crowded = await _phase(gateway, base, beat.pipeline.commit, 1 + BATCHES * BATCH)
        await eventually(
            lambda: gateway.metrics.overflow._value.get() >= STALLED,
            what="every stalled one dropped",
        )
        for sock in stalled:
            sock.close()
    base_p95, crowded_p95 = _p95(alone), _p95(crowded)
    report = Report(
        "stalled-clients", BATCHES * BATCH * 2, len(alone) + len(crowded), 0,
        notes={"p95_ms_alone": round(base_p95 * 1000, 1),
               "p95_ms_with_stalled": round(crowded_p95 * 1000, 1), "stalled": STALLED},
    )  # fmt: skip
    print(report.line())
    assert len(alone) == len(crowded) == BATCHES * BATCH
    assert crowded_p95 <= max(3 * base_p95, base_p95 + 0.05), report.line()
