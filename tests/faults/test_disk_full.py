"""The disk fills up under load, then space returns (the HiveMQ beat, a real subprocess).

The beat's data directory is a small tmpfs; the sensor simulator publishes a known number of
QoS 1 readings. When the log cannot be written, the beat must not acknowledge what it could not
commit (the broker keeps it), and ``/readyz`` must say why; once the filesystem grows again the
beat recovers and every reading ends up in the log — nothing lost, no gap on SSE.
Needs permission to mount a tmpfs (root, as on the CI machine); skipped with the reason if not.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.faults.harness import Report, SseCounter, stack
from tests.support import eventually

pytestmark = pytest.mark.slow


@contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def grow(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


async def readiness(base: str) -> tuple[int, dict[str, object]]:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"{base}/readyz")
    return response.status_code, response.json()


async def test_disk_full_withholds_acks_and_recovers_without_loss(tmp_path: Path) -> None:
    published = 3000  # 100 per second from the simulator
    with small_disk(tmp_path / "hivemq", "1m") as disk:
        async with stack("hivemq", tmp_path, count=published) as running:
            with SseCounter(f"{running.beat.base}/events") as sse:
                seen: list[dict[str, object]] = []

                async def unready() -> bool:
                    status, body = await readiness(running.beat.base)
                    seen.append(body)
                    return status == 503

                await eventually(unready, timeout=60, what="the beat to report the full disk")
                full_at = await running.head()
                await asyncio.sleep(2)  # the load goes on while nothing can be committed
                grow(disk, "256m")
                regrown = time.monotonic()
                await eventually(lambda: len(sse.contents) >= published, timeout=90, what="all")
                recovery = time.monotonic() - regrown
                head = await running.head()
                await sse.wait_for(head)
    detail = str(seen[-1]["checks"])
    report = Report("disk-full/hivemq", head, len(set(sse.sequences)), sse.gaps,
                    recovery_s=recovery,
                    notes={"published": published, "head_when_full": full_at,
                           "redelivered": head - len(sse.contents)})  # fmt: skip
    print(report.line())
    assert "log" in detail and "'ok': False" in detail
    assert 0 < full_at < published
    assert len(sse.contents) == published, "a reading was lost"
    assert not sse.missing(head) and sse.duplicates() == 0 and sse.gaps == 0
