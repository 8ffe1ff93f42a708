"""The durable local event log: SQLite in WAL mode, group commit, monotonic sequences.

Contract
--------
* :meth:`EventLog.append` is the commit point. When it returns, the events are in the database
  file and survive ``kill -9`` of the process (WAL with ``synchronous=NORMAL``; choose ``full``
  to survive power loss as well). Only then may a source acknowledge its upstream.
* Concurrent appends are coalesced into one transaction (group commit) by a single writer task,
  in arrival order, so sequences follow the order in which appends were called.
* Sequences start at 1, only grow and are never reused, even after retention deleted every row.
* An event whose ``id`` is already in the log is skipped (counted as a duplicate) and gets no new
  sequence: sources with natural ids (OpenCTI stream ids, Ditto revisions) are deduplicated here.
* Retention by count and by age runs in the writer, between commits. Ids older than what is kept
  are reported by :attr:`EventLog.purged_through` so replays can signal the gap.
* Cursors (``kafka`` for the forwarder, a source position for resumable sources) are stored in
  the same database, so a cursor is never ahead of the events it points at.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from common.envelope import CloudEvent

__all__ = ["EventLog", "LogUnavailable", "StoredEvent"]

_log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL,
    type TEXT NOT NULL,
    key TEXT NOT NULL,
    appended_at REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_channel_seq ON events (channel, seq);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


_INSERT = "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?)"
_SET_CURSOR = (
    "INSERT INTO cursors VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value=excluded.value"
)


class LogUnavailable(RuntimeError):
    """The log could not commit (disk full, read-only, closed). Nothing was acknowledged."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A committed event: its sequence, routing fields and its JSON bytes (with ``sequence``)."""

    seq: int
    channel: str
    type: str
    key: str
    body: bytes
    _frame: list[bytes] = field(default_factory=list, compare=False, repr=False)

    def sse_frame(self) -> bytes:
        """The SSE wire frame (``id``, ``event``, ``data``), rendered once and shared."""
        if not self._frame:
            self._frame.append(
                b"id: %d\nevent: %s\ndata: %s\n\n" % (self.seq, self.type.encode(), self.body)
            )
        return self._frame[0]


@dataclass(slots=True)
class _Pending:
    events: Sequence[CloudEvent]
    future: asyncio.Future[list[StoredEvent | None]]
    cursor: tuple[str, str] | None = None


_Listener = Callable[[list[StoredEvent]], None]


class EventLog:
    def __init__(
        self,
        path: Path,
        *,
        retention_count: int | None = 1_000_000,
        retention_age: float | None = 7 * 24 * 3600.0,
        synchronous: Literal["normal", "full"] = "normal",
        max_batch: int = 2000,
        observe_commit: Callable[[float], None] | None = None,
    ) -> None:
        self.path = path
        self.retention_count = retention_count
        self.retention_age = retention_age
        self.synchronous = synchronous
        self.max_batch = max_batch
        self._observe_commit = observe_commit
        self.head = 0
        self.purged_through = 0
        self.last_error: str | None = None
        self.duplicates = 0
        self._listeners: list[_Listener] = []
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._appended = asyncio.Event()
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="eventlog-write")
        self._reader_pool = ThreadPoolExecutor(2, thread_name_prefix="eventlog-read")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._conn_lock = threading.Lock()
        self._writer: asyncio.Task[None] | None = None
        self._last_retention = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer_pool, self._open_sync)
        self._writer = asyncio.create_task(self._write_loop(), name=f"eventlog-writer:{self.path}")

    async def close(self) -> None:
        """Commit what is queued, then close. Appends after this raise :class:`LogUnavailable`."""
        if self._writer is not None:
            await self._queue.join()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer_pool, self._close_all)
        self._writer_pool.shutdown(wait=True)
        self._reader_pool.shutdown(wait=True)

    async def __aenter__(self) -> EventLog:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def add_listener(self, listener: _Listener) -> None:
        """Called on the event loop, in sequence order, with each committed batch."""
        self._listeners.append(listener)

    # -- writing ---------------------------------------------------------------------------

    async def append(
        self, events: Sequence[CloudEvent], *, cursor: tuple[str, str] | None = None
    ) -> list[StoredEvent | None]:
        """Commit ``events``; returns one entry per event, ``None`` for a skipped duplicate."""
        return await self.submit(events, cursor=cursor)

    def submit(
        self, events: Sequence[CloudEvent], *, cursor: tuple[str, str] | None = None
    ) -> asyncio.Future[list[StoredEvent | None]]:
        """Queue ``events`` for the next group commit; the future resolves after the commit.

        Lets a source pipeline many inputs and acknowledge each one from a done-callback, in
        order, without awaiting each commit in turn. ``cursor=(name, value)`` is stored in the
        same transaction as the events: a resumable source's position never runs ahead of (or
        behind) what it committed.
        """
        future: asyncio.Future[list[StoredEvent | None]] = (
            asyncio.get_running_loop().create_future()
        )
        if self._writer is None or self._writer.done():
            future.set_exception(LogUnavailable("event log is closed"))
            return future
        self._queue.put_nowait(_Pending(events, future, cursor))
        return future

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            count = len(batch[0].events)
            while not self._queue.empty() and count < self.max_batch:
                item = self._queue.get_nowait()
                batch.append(item)
                count += len(item.events)
            started = loop.time()
            try:
                results = await loop.run_in_executor(self._writer_pool, self._commit_sync, batch)
            except (sqlite3.Error, OSError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(LogUnavailable(self.last_error))
            else:
                self.last_error = None
                if self._observe_commit is not None:
                    self._observe_commit(loop.time() - started)
                self._deliver(batch, results)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _deliver(self, batch: list[_Pending], results: list[list[StoredEvent | None]]) -> None:
        committed = [stored for result in results for stored in result if stored is not None]
        for listener in self._listeners:
            listener(committed)
        if committed:
            self._appended.set()
            self._appended = asyncio.Event()
        for item, result in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)

    async def wait_for_append(self, timeout: float) -> None:
        """Return after the next commit, or after ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._appended.wait(), timeout)

    # -- reading ---------------------------------------------------------------------------

    async def read(
        self,
        *,
        after: int,
        limit: int = 500,
        channel: str | None = None,
        max_bytes: int | None = None,
    ) -> list[StoredEvent]:
        """Committed events with ``seq > after``, oldest first, at most ``limit``; with
        ``max_bytes``, rows stop being fetched once their bodies reach it (at least one row is
        returned, so a page exceeds ``max_bytes`` by less than one event)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._reader_pool, self._read_sync, after, limit, channel, max_bytes
        )

    async def oldest(self) -> int:
        """The smallest sequence kept (``head + 1`` when the log is empty)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, self._oldest_sync)

    async def get_cursor(self, name: str) -> str | None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, self._get_cursor_sync, name)

    async def set_cursor(self, name: str, value: str) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer_pool, self._set_cursor_sync, name, value)

    # -- synchronous parts (run in the executors) ------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            conn.execute("PRAGMA busy_timeout=5000")
            self._local.conn = conn
            with self._conn_lock:
                self._connections.append(conn)
        return conn

    def _open_sync(self) -> None:
        conn = self._connect()
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT value FROM meta WHERE name='high_water'").fetchone()
        high = int(row[0]) if row else 0
        (max_seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
        self.head = max(high, int(max_seq))
        row = conn.execute("SELECT value FROM meta WHERE name='purged_through'").fetchone()
        self.purged_through = int(row[0]) if row else 0

    def _close_all(self) -> None:
        with self._conn_lock:
            for conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()

    def _commit_sync(self, batch: list[_Pending]) -> list[list[StoredEvent | None]]:
        conn = self._connect()
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            results = self._insert_all(conn, batch, now)
            for item in batch:
                if item.cursor is not None:
                    conn.execute(_SET_CURSOR, item.cursor)
            head = max((s.seq for r in results for s in r if s is not None), default=self.head)
            conn.execute(
                "INSERT INTO meta VALUES ('high_water', ?) "
                "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                (str(head),),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.head = head
        try:
            self._maybe_apply_retention(conn, now)
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            _log.exception("retention failed; it will be retried after the next commit")
        return results

    def _insert_all(
        self, conn: sqlite3.Connection, batch: list[_Pending], now: float
    ) -> list[list[StoredEvent | None]]:
        """Insert in one statement when no id repeats (the common case), else row by row so
        that a duplicate gets no sequence and leaves no hole."""
        seq = self.head
        results: list[list[StoredEvent | None]] = []
        rows = []
        for item in batch:
            result: list[StoredEvent | None] = []
            for event in item.events:
                seq += 1
                body = event.to_json_with_sequence(seq)
                result.append(StoredEvent(seq, event.channel, event.type, event.partitionkey, body))
                rows.append(
                    (seq, event.id, event.channel, event.type, event.partitionkey, now, body)
                )
            results.append(result)
        conn.execute("SAVEPOINT fast")
        cursor = conn.executemany(_INSERT, rows)
        if cursor.rowcount == len(rows):
            conn.execute("RELEASE fast")
            return results
        conn.execute("ROLLBACK TO fast")
        conn.execute("RELEASE fast")
        return self._insert_each(conn, batch, now)

    def _insert_each(
        self, conn: sqlite3.Connection, batch: list[_Pending], now: float
    ) -> list[list[StoredEvent | None]]:
        seq = self.head
        results: list[list[StoredEvent | None]] = []
        for item in batch:
            result: list[StoredEvent | None] = []
            for event in item.events:
                body = event.to_json_with_sequence(seq + 1)
                row = (seq + 1, event.id, event.channel, event.type, event.partitionkey, now, body)
                if conn.execute(_INSERT, row).rowcount == 0:
                    self.duplicates += 1
                    result.append(None)
                    continue
                seq += 1
                result.append(StoredEvent(seq, event.channel, event.type, event.partitionkey, body))
            results.append(result)
        return results

    def _maybe_apply_retention(self, conn: sqlite3.Connection, now: float) -> None:
        if now - self._last_retention < 1.0:
            return
        self._last_retention = now
        bounds: list[int] = []
        if self.retention_count is not None:
            bounds.append(self.head - self.retention_count)
        if self.retention_age is not None:
            row = conn.execute(
                "SELECT MAX(seq) FROM events WHERE appended_at < ?", (now - self.retention_age,)
            ).fetchone()
            bounds.append(int(row[0] or 0))
        through = max(bounds, default=0)
        if through <= self.purged_through:
            return
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM events WHERE seq <= ?", (through,))
        conn.execute(
            "INSERT INTO meta VALUES ('purged_through', ?) "
            "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
            (str(through),),
        )
        conn.execute("COMMIT")
        self.purged_through = through

    def _read_sync(
        self, after: int, limit: int, channel: str | None, max_bytes: int | None = None
    ) -> list[StoredEvent]:
        conn = self._connect()
        if channel is None:
            rows = conn.execute(
                "SELECT seq, channel, type, key, body FROM events WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (after, limit),
            )
        else:
            rows = conn.execute(
                "SELECT seq, channel, type, key, body FROM events "
                "WHERE channel = ? AND seq > ? ORDER BY seq LIMIT ?",
                (channel, after, limit),
            )
        events: list[StoredEvent] = []
        size = 0
        for seq, ch, typ, key, body in rows:
            events.append(StoredEvent(seq, ch, typ, key, bytes(body)))
            size += len(body)
            if max_bytes is not None and size >= max_bytes:
                break
        return events

    def _oldest_sync(self) -> int:
        (low,) = self._connect().execute("SELECT MIN(seq) FROM events").fetchone()
        return int(low) if low is not None else self.head + 1

    def _get_cursor_sync(self, name: str) -> str | None:
        row = self._connect().execute("SELECT value FROM cursors WHERE name=?", (name,)).fetchone()
        return str(row[0]) if row else None

    def _set_cursor_sync(self, name: str, value: str) -> None:
        self._connect().execute(_SET_CURSOR, (name, value))
