"""Storage faults on a running beat (the HiveMQ beat as a real process, fed through Mosquitto):
a zero-length database, a lost WAL, a truncated file, overwritten pages, a read-only disk.

What each proves: the beat either refuses to start with one clear line and exit status 5 (and
``beats log check`` / ``beats log repair`` fix what can be fixed), or it starts and **never
issues a sequence twice** (new events get sequences above everything clients already hold), and
a client resuming from a position the log lost is told so with ``beats.gap`` (reason ``lost``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.brokers import MosquittoBroker
from tests.faults.test_disk_full import small_disk
from tests.hivemq.test_mqtt_beat import publisher
from tests.processes import ROOT, ServiceProcess
from tests.support import SseMessage, eventually, free_port, read_sse, read_sse_until

pytestmark = pytest.mark.slow


@pytest.fixture
def beat(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[ServiceProcess]:
    service = ServiceProcess(beat_args(tmp_path / "data", mosquitto), port=free_port(),
                             log=tmp_path / "beat.log")  # fmt: skip
    yield service
    service.stop()


def beat_args(data: Path, mosquitto: MosquittoBroker) -> list[str]:
    return ["run", "hivemq", "--mqtt-url", mosquitto.url, "--mqtt-topic", "disk/#",
            "--mqtt-client-id", "storage-faults", "--data-dir", str(data)]  # fmt: skip


async def publish(mosquitto: MosquittoBroker, first: int, count: int, *, pad: int = 0) -> None:
    async with publisher(mosquitto) as client:
        for n in range(first, first + count):
            await client.publish("disk/x", json.dumps({"n": n, "pad": "x" * pad}), qos=1)


async def events(base: str, after: int, *, until_n: int) -> list[SseMessage]:
    """Every message after ``after`` (gap signals included) until reading ``n == until_n``."""

    def done(messages: list[SseMessage]) -> bool:
        return any(m.event != "beats.gap" and m.json()["data"]["n"] == until_n for m in messages)

    return await read_sse_until(f"{base}/events?last_event_id={after}", done, timeout=30)


def ns(messages: list[SseMessage]) -> list[int]:
    return [m.json()["data"]["n"] for m in messages if m.event != "beats.gap"]


async def metric(base: str, name: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{base}/metrics")).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def beats(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "beats", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=False)  # fmt: skip


async def test_a_zero_length_database_loses_its_events_loudly_and_reuses_no_sequence(
    beat: ServiceProcess, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    beat.start()
    await publish(mosquitto, 0, 50)
    held = await events(beat.base, 0, until_n=49)
    assert [int(m.id) for m in held] == list(range(1, 51))
    assert await asyncio.to_thread(beat.terminate, 20) == 0
    (tmp_path / "data" / "hivemq.db").write_bytes(b"")
    beat.start()
    assert "EVENTS LOST" in beat.log.read_text()
    assert await metric(beat.base, 'beats_log_recoveries_total{kind="lost"}') == 1
    await publish(mosquitto, 50, 5)
    resumed = await events(beat.base, 30, until_n=54)  # a client that had read up to 30
    gap = resumed[0]
    assert gap.event == "beats.gap" and gap.json() == {
        "requested": 30, "resumed_after": 50, "reason": "lost"
    }  # fmt: skip
    assert ns(resumed) == [50, 51, 52, 53, 54]
    assert [int(m.id) for m in resumed[1:]] == list(range(51, 56)), "a sequence was reused"
    described = beats("log", "info", "--data-dir", str(tmp_path / "data"))  # beside the beat
    (info,) = json.loads(described.stdout)
    assert info["ranges"] == [[0, 50, "lost"]] and info["events"]["count"] == 5
    assert info["mark"]["generation"] == info["generation"] and info["high_water"] == 55
    caught_up = await events(beat.base, 50, until_n=54)  # a client that had everything
    assert caught_up[0].event != "beats.gap" and ns(caught_up) == list(range(50, 55))


async def test_a_lost_wal_after_kill_9_reuses_no_sequence(
    beat: ServiceProcess, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    beat.start()
    await publish(mosquitto, 0, 200)
    held = await events(beat.base, 0, until_n=199)
    newest = int(held[-1].id)
    mark = tmp_path / "data" / "hivemq.db.hwm"
    # an idle log records its head in the high-water mark within a second or so
    await eventually(lambda: json.loads(mark.read_text())["committed"] == newest, what="mark")
    beat.kill()
    for extra in ("-wal", "-shm"):
        (tmp_path / "data" / f"hivemq.db{extra}").unlink(missing_ok=True)
    beat.start()
    assert "EVENTS LOST" in beat.log.read_text()
    await publish(mosquitto, 200, 3)
    resumed = await events(beat.base, newest, until_n=202)
    new = [m for m in resumed if m.event != "beats.gap"]
    assert all(int(m.id) > newest for m in new), "a sequence was reused"
    assert ns(resumed)[-3:] == [200, 201, 202]


@pytest.mark.parametrize("damage", ["truncate", "overwrite"])
async def test_a_damaged_database_stops_the_beat_with_advice_and_repair_keeps_the_rest(
    beat: ServiceProcess, mosquitto: MosquittoBroker, tmp_path: Path, damage: str
) -> None:
    beat.start()
    await publish(mosquitto, 0, 2000, pad=200)
    await events(beat.base, 1990, until_n=1999)
    assert await asyncio.to_thread(beat.terminate, 20) == 0
    database = tmp_path / "data" / "hivemq.db"
    size = database.stat().st_size
    with database.open("r+b") as file:
        if damage == "truncate":
            file.truncate(size * 2 // 3)
        else:
            file.seek(size // 2 // 4096 * 4096)
            file.write(os.urandom(3 * 4096))
    started = time.monotonic()
    refused = beats(*beat_args(tmp_path / "data", mosquitto), "--port", str(beat.port))
    refused_in = time.monotonic() - started
    assert refused.returncode == 5
    assert "is damaged" in refused.stderr and "beats log repair" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    checked = beats("log", "check", "--data-dir", str(tmp_path / "data"))
    assert checked.returncode == 1 and "malformed" in checked.stdout
    repaired = beats("log", "repair", "--data-dir", str(tmp_path / "data"))
    assert repaired.returncode == 0, repaired.stderr
    summary = json.loads(repaired.stdout)
    lost = sum(high - low for low, high in summary["lost"])
    print(f"STORAGE {damage}: refused in {refused_in:.1f}s (exit 5); repair copied "
          f"{summary['copied']}, lost {lost} in {len(summary['lost'])} ranges")  # fmt: skip
    assert summary["copied"] + lost == 2000 and lost > 0
    assert beats("log", "check", "--data-dir", str(tmp_path / "data")).returncode == 0
    beat.start()
    await publish(mosquitto, 2000, 1)
    replay = await events(beat.base, 0, until_n=2000)
    gaps = [m.json() for m in replay if m.event == "beats.gap"]
    assert gaps and all(g["reason"] == "lost" for g in gaps), "the replay crossed the damage"
    assert len(ns(replay)) == summary["copied"] + 1
    assert int(replay[-1].id) == 2001, "sequences go on above the old head"


async def test_a_read_only_disk_stops_the_beat_with_one_line(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "data", "4m") as disk:
        service = ServiceProcess(beat_args(disk, mosquitto), port=free_port(),
                                 log=tmp_path / "beat.log")  # fmt: skip
        service.start()
        await publish(mosquitto, 0, 10)
        await read_sse(f"{service.base}/events?last_event_id=0", count=10)
        assert await asyncio.to_thread(service.terminate, 20) == 0
        remount = ["mount", "-o", "remount,ro", str(disk)]
        await asyncio.to_thread(subprocess.run, remount, check=True)
        refused = beats(*beat_args(disk, mosquitto), "--port", str(service.port))
    assert refused.returncode == 5, refused.stderr
    assert "cannot be" in refused.stderr and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
