from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from common.envelope import CloudEvent, new_event
from common.eventlog import EventLog, LogDamaged, LogUnavailable


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


async def test_an_unexpected_failure_fails_its_batch_only_and_the_writer_goes_on(
    tmp_path: Path,
) -> None:
    failures: list[str] = []
    async with EventLog(tmp_path / "log.db", observe_failure=failures.append) as log:
        commit = log.db.commit
        calls = 0

        def fail_once(batch: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("a bug in the writer")
            return commit(batch)

        log.db.commit = fail_once  # type: ignore[method-assign]
        with pytest.raises(LogUnavailable, match="a bug in the writer"):
            await log.append([event(1)])
        assert (await log.check()) == (False, "commits fail: RuntimeError: a bug in the writer")
        (stored,) = await log.append([event(2)])
        assert stored is not None and stored.seq == 1
        assert await log.check() == (True, "writable")
    assert failures == ["unexpected"]


async def test_a_failing_listener_is_counted_and_stops_nothing(tmp_path: Path) -> None:
    failures: list[str] = []
    seen: list[int] = []
    async with EventLog(tmp_path / "log.db", observe_failure=failures.append) as log:

        def broken(batch: Any) -> None:
            raise ZeroDivisionError

        log.add_listener(broken)
        log.add_listener(lambda batch: seen.extend(s.seq for s in batch))
        for n in range(3):
            await log.append([event(n)])
    assert seen == [1, 2, 3] and failures == ["listener"] * 3


async def test_an_event_that_cannot_be_encoded_fails_its_own_submission_only(
    tmp_path: Path,
) -> None:
    bad = new_event(beat="t", type="t", source="s", channel="c", partitionkey="k", data="\ud800")
    async with EventLog(tmp_path / "log.db") as log:
        rejected = log.submit([bad])
        accepted = log.submit([event(1)])
        with pytest.raises(ValueError, match="cannot be encoded"):
            await rejected
        (stored,) = await accepted
        assert stored is not None and stored.seq == 1


async def test_readiness_probes_an_idle_log_and_reports_a_stuck_writer(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    async with EventLog(path) as log:
        assert await log.check() == (True, "writable")  # a probe commit: nothing was written yet
        head = log.head
        lock = sqlite3.connect(path, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # the writer now waits for the database
        ok, detail = await log.check(max_age=0, timeout=0.5)
        assert not ok and "no commit completed within 0.5s" in detail
        lock.execute("ROLLBACK")
        lock.close()
        await log.check(max_age=0, timeout=10)
        assert await log.check(max_age=0) == (True, "writable")
        assert log.head == head  # probes issue no sequence
    closed = await log.check()
    assert closed == (False, "the event log is closed")


async def test_a_zero_length_database_continues_above_its_mark_and_records_the_loss(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log.db"
    async with EventLog(path) as log:
        await log.append([event(n) for n in range(30)])
    path.write_bytes(b"")
    async with EventLog(path) as log:
        assert log.recovery is not None and log.recovery.kind == "lost"
        assert log.head == 30 and [(r.low, r.high, r.kind) for r in log.ranges] == [(0, 30, "lost")]
        (stored,) = await log.append([event(99)])
        assert stored is not None and stored.seq == 31
    async with EventLog(path) as log:  # the range is remembered, the stop was clean
        assert log.recovery is not None and log.recovery.kind is None
        assert [(r.low, r.high) for r in log.ranges] == [(0, 30)]


def test_a_lost_wal_never_makes_the_log_reuse_a_sequence(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert process.stdout is not None
    acknowledged = 0
    while acknowledged < 500:
        acknowledged = int(process.stdout.readline())
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    acknowledged = max([acknowledged, *map(int, process.stdout.read().split())])
    for extra in ("-wal", "-shm"):
        path.with_name(path.name + extra).unlink(missing_ok=True)

    async def check() -> None:
        async with EventLog(path) as log:
            # lost (the database is behind the mark's last "committed") or skipped (the mark
            # was refreshed before the WAL's last checkpoint): either way, nothing is reused
            assert log.recovery is not None and log.recovery.kind in ("lost", "skipped")
            assert log.head > acknowledged
            (stored,) = await log.append([event(1)])
            assert stored is not None and stored.seq > acknowledged

    asyncio.run(check())


@pytest.mark.parametrize("damage", ["truncate", "overwrite", "header"])
async def test_a_damaged_database_is_refused_with_advice_and_left_untouched(
    tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "log.db"
    async with EventLog(path) as log:
        for n in range(20):
            await log.append([event(n * 100 + i) for i in range(100)])
    size = path.stat().st_size
    with path.open("r+b") as file:
        if damage == "truncate":
            file.truncate(size // 2)
        elif damage == "overwrite":
            file.seek(size // 2 // 4096 * 4096)
            file.write(os.urandom(3 * 4096))
        else:
            file.write(b"not a database at all" * 5)
    before = path.read_bytes()
    with pytest.raises(LogDamaged, match=r"is damaged .*beats log check --data-dir"):
        async with EventLog(path):
            pass
    assert path.read_bytes() == before
