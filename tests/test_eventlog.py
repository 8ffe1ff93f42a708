from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from common.envelope import CloudEvent, new_event
from common.eventlog import EventLog, LogUnavailable


def event(n: int, *, channel: str = "c", id: str | None = None) -> CloudEvent:
    return new_event(
        beat="test",
        type="t",
        source="s",
        channel=channel,
        partitionkey=f"k{n}",
        data={"n": n},
        id=id,
    )


async def test_sequences_start_at_one_and_follow_append_order(tmp_path: Path) -> None:
    async with EventLog(tmp_path / "log.db") as log:
        futures = [log.submit([event(i)]) for i in range(50)]
        results = await asyncio.gather(*futures)
        seqs = [r[0].seq for r in results if r[0] is not None]
        assert seqs == list(range(1, 51))
        stored = await log.read(after=0, limit=100)
        assert [json.loads(s.body)["data"]["n"] for s in stored] == list(range(50))
        assert [json.loads(s.body)["sequence"] for s in stored] == seqs


async def test_concurrent_appends_are_group_committed(tmp_path: Path) -> None:
    commits: list[int] = []
    async with EventLog(tmp_path / "log.db") as log:
        log.add_listener(lambda batch: commits.append(len(batch)))
        await asyncio.gather(*(log.append([event(i)]) for i in range(500)))
    assert sum(commits) == 500
    assert len(commits) < 500, "every append got its own transaction"


async def test_sequences_survive_reopen_and_are_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    async with EventLog(path, retention_count=2) as log:
        for i in range(5):
            await log.append([event(i)])
            log.db.last_retention = 0  # let retention run after every commit
        assert log.purged_through == 3
    async with EventLog(path, retention_count=2) as log:
        assert log.head == 5
        assert log.purged_through == 3
        (stored,) = await log.append([event(6)])
        assert stored is not None and stored.seq == 6


async def test_retention_by_age(tmp_path: Path) -> None:
    async with EventLog(tmp_path / "log.db", retention_count=None, retention_age=0.2) as log:
        await log.append([event(1), event(2)])
        await asyncio.sleep(0.3)
        log.db.last_retention = 0
        await log.append([event(3)])
        assert [s.seq for s in await log.read(after=0)] == [3]
        assert log.purged_through == 2
        assert await log.oldest() == 3


async def test_duplicate_ids_are_skipped_without_a_sequence(tmp_path: Path) -> None:
    async with EventLog(tmp_path / "log.db") as log:
        first = await log.append([event(1, id="natural-1"), event(2, id="natural-2")])
        again = await log.append([event(1, id="natural-1"), event(3, id="natural-3")])
        assert [s.seq if s else None for s in first] == [1, 2]
        assert [s.seq if s else None for s in again] == [None, 3]
        assert log.duplicates == 1


async def test_read_by_channel_and_cursors(tmp_path: Path) -> None:
    async with EventLog(tmp_path / "log.db") as log:
        await log.append([event(1, channel="a"), event(2, channel="b"), event(3, channel="a")])
        assert [s.seq for s in await log.read(after=0, channel="a")] == [1, 3]
        assert [s.seq for s in await log.read(after=1, limit=1)] == [2]
        assert await log.get_cursor("kafka") is None
        await log.set_cursor("kafka", "2")
        assert await log.get_cursor("kafka") == "2"


async def test_append_to_unwritable_log_fails_and_recovers(tmp_path: Path) -> None:
    async with EventLog(tmp_path / "log.db") as log:
        await log.append([event(1)])
        conn = log._connect()
        conn.execute("PRAGMA query_only=1")  # the writer's connection can no longer write
        writer_conn = await asyncio.get_running_loop().run_in_executor(
            log._writer_pool, log._connect
        )
        writer_conn.execute("PRAGMA query_only=1")
        with pytest.raises(LogUnavailable):
            await log.append([event(2)])
        assert log.last_error is not None
        writer_conn.execute("PRAGMA query_only=0")
        (stored,) = await log.append([event(3)])
        assert stored is not None and stored.seq == 2
        assert log.last_error is None


async def test_closed_log_rejects_appends(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "log.db")
    await log.open()
    await log.close()
    with pytest.raises(LogUnavailable):
        await log.append([event(1)])


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from common.envelope import new_event
    from common.eventlog import EventLog

    async def main():
        async with EventLog(Path(sys.argv[1])) as log:
            n = 0
            while True:
                batch = [new_event(beat="t", type="t", source="s", channel="c",
                                   partitionkey="k", data={"n": n + i}) for i in range(10)]
                stored = await log.append(batch)
                n += 10
                print(stored[-1].seq, flush=True)

    asyncio.run(main())
    """
)


def test_appends_that_returned_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert process.stdout is not None
    acknowledged = 0
    deadline = time.monotonic() + 20
    while acknowledged < 2000 and time.monotonic() < deadline:
        acknowledged = int(process.stdout.readline())
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert acknowledged >= 2000

    async def check() -> None:
        async with EventLog(path) as log:
            assert log.head >= acknowledged
            kept = await log.read(after=0, limit=acknowledged)
            assert [s.seq for s in kept] == list(range(1, acknowledged + 1))

    asyncio.run(check())


async def test_cursor_is_committed_with_the_events(tmp_path: Path) -> None:
    async with EventLog(tmp_path / "log.db") as log:
        await log.append([event(1)], cursor=("stream", "1700000000000-0"))
        assert await log.get_cursor("stream") == "1700000000000-0"
        await log.append([], cursor=("stream", "1700000000005-0"))  # a heartbeat moves it too
        assert await log.get_cursor("stream") == "1700000000005-0"
        writer = await asyncio.get_running_loop().run_in_executor(log._writer_pool, log._connect)
        writer.execute("PRAGMA query_only=1")
        with pytest.raises(LogUnavailable):
            await log.append([event(2)], cursor=("stream", "1700000000009-0"))
        writer.execute("PRAGMA query_only=0")
        assert await log.get_cursor("stream") == "1700000000005-0"
        assert log.head == 1
