"""The synchronous side of the event log: one SQLite database in WAL mode.

Everything here runs in the event log's executor threads (:mod:`common.eventlog`): one writer
thread commits, reader threads read, each with its own connection. Nothing here is async.

Opening checks the file before anything is written (:meth:`LogDatabase.open`): a file that is
not a database, or fails ``PRAGMA quick_check``, is refused with :class:`LogDamaged` and left
untouched; the high-water mark (:mod:`common.highwater`) decides where sequences continue.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from common.envelope import CloudEvent
from common.highwater import (
    RESERVE,
    Mark,
    MarkUnreadable,
    Recovery,
    boot_id,
    mark_path,
    read_mark,
    recover,
    write_mark,
)
from common.lifecycle import EXIT_LOG_UNUSABLE, Fatal

__all__ = ["Encoded", "GapRange", "LogDamaged", "LogDatabase", "StoredEvent", "integrity"]

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
CREATE TABLE IF NOT EXISTS state (
    namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
);
"""
_INSERT = "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?)"
_SET_CURSOR = (
    "INSERT INTO cursors VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value=excluded.value"
)
_SET_META = "INSERT INTO meta VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value=excluded.value"
_MAX_RANGES = 100
_MARK_EVERY = 1.0


class LogDamaged(Fatal):
    """The database cannot be used as it is; the message says what and what to do."""

    exit_code = EXIT_LOG_UNUSABLE


@dataclass(frozen=True, slots=True)
class Encoded:
    """An event ready for the log: the event (for its id and routing) and its JSON bytes,
    without ``sequence`` (encoding happens before the group commit, so that an event that
    cannot be encoded fails alone: :meth:`common.pipeline.Pipeline.submit`)."""

    event: CloudEvent
    json: bytes

    @classmethod
    def of(cls, event: CloudEvent) -> Encoded:
        """Encode ``event``; ``ValueError`` (or ``RecursionError``) when it cannot be."""
        if event.sequence is not None:
            event = event.model_copy(update={"sequence": None})
        return cls(event, event.to_json())


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


@dataclass(frozen=True, slots=True)
class GapRange:
    """Sequences in ``(low, high]`` that the log gave up at a recovery (``kind``: see
    :class:`common.highwater.Recovery`)."""

    low: int
    high: int
    kind: str

    def covers(self, seq: int) -> bool:
        return self.low < seq <= self.high


def integrity(conn: sqlite3.Connection, *, full: bool = False) -> list[str]:
    """``PRAGMA quick_check`` (or ``integrity_check``): the problems found, ``[]`` when ok."""
    pragma = "integrity_check" if full else "quick_check"
    rows = [str(row[0]) for row in conn.execute(f"PRAGMA {pragma}(20)")]
    return [] if rows == ["ok"] else rows


class LogDatabase:
    """The database file of one event log (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Literal["normal", "full"] = "normal",
        check: Literal["quick", "full", "off"] = "quick",
    ) -> None:
        self.path = path
        self.mark_path = mark_path(path)
        self.synchronous = synchronous
        self.check = check
        self.head = 0
        self.purged_through = 0
        self.ranges: list[GapRange] = []
        self.recovery: Recovery | None = None
        self.duplicates = 0
        self.last_retention = 0.0
        self._mark = Mark.new()
        self._marked_at = 0.0
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._conn_lock = threading.Lock()

    # -- connections -------------------------------------------------------------------------

    def connect(self) -> sqlite3.Connection:
        """This thread's connection (one per thread, closed by :meth:`close`)."""
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

    def close(self, *, clean: bool) -> None:
        """Close every connection; ``clean``: record a clean stop in the mark."""
        if clean and self.recovery is not None:
            with contextlib.suppress(OSError):
                self._write_mark(self.head, self.head, clean=True)
        with self._conn_lock:
            for conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()

    # -- opening -----------------------------------------------------------------------------

    def open(self) -> Recovery:
        """Check the file, create the schema, and decide where sequences continue."""
        wal_present = self.path.with_name(self.path.name + "-wal").exists()
        try:
            conn = self.connect()
            if self.check != "off":
                problems = integrity(conn, full=self.check == "full")
                if problems:
                    raise LogDamaged(self._damaged(f"integrity check failed: {problems[0]}"))
            conn.executescript(_SCHEMA)
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
            (max_seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
        except sqlite3.OperationalError as exc:  # read-only, cannot open, I/O error, full
            raise LogDamaged(self._unusable(str(exc))) from None
        except sqlite3.DatabaseError as exc:  # corrupt, not a database
            raise LogDamaged(self._damaged(str(exc))) from None
        db_head = max(int(meta.get("high_water", 0)), int(max_seq))
        self.purged_through = int(meta.get("purged_through", 0))
        self.ranges = [GapRange(*r) for r in json.loads(meta.get("ranges", "[]"))]
        try:
            mark = read_mark(self.mark_path)
        except MarkUnreadable as exc:
            _log.error("%s; continuing from the database alone", exc)
            mark = None
        recovery = recover(
            mark=mark,
            db_generation=meta.get("generation"),
            db_head=db_head,
            wal_present=wal_present,
            durable=self.synchronous == "full",
        )
        self._start(conn, recovery)
        return recovery

    def _damaged(self, detail: str) -> str:
        return (
            f"the event log {self.path} is damaged ({detail}). Nothing was changed. "
            f"Inspect it with `beats log check --data-dir {self.path.parent}`; "
            f"`beats log repair --data-dir {self.path.parent}` keeps what is readable"
        )

    def _unusable(self, detail: str) -> str:
        return (
            f"the event log {self.path} cannot be opened for writing ({detail}); check that "
            f"{self.path.parent} is writable, has free space and is not used by another process"
        )

    def _start(self, conn: sqlite3.Connection, recovery: Recovery) -> None:
        self.recovery = recovery
        self.head = recovery.head
        if recovery.kind is not None:
            self.ranges = [*self.ranges, GapRange(recovery.low, recovery.high, recovery.kind)]
            self.ranges = self.ranges[-_MAX_RANGES:]
        self._mark = Mark(recovery.generation, self.head, self.head, False, boot_id())
        try:
            with _transaction(conn):
                conn.execute(_SET_META, ("generation", recovery.generation))
                conn.execute(_SET_META, ("high_water", str(self.head)))
                conn.execute(_SET_META, ("ranges", self._ranges_json()))
        except sqlite3.Error as exc:
            raise LogDamaged(self._unusable(str(exc))) from None
        try:
            self._write_mark(self.head, self.head + RESERVE, clean=False)
        except OSError as exc:
            raise LogDamaged(self._unusable(f"its high-water mark: {exc}")) from None

    def _ranges_json(self) -> str:
        return json.dumps([[r.low, r.high, r.kind] for r in self.ranges])

    def _write_mark(self, committed: int, reserved: int, *, clean: bool) -> None:
        mark = Mark(self._mark.generation, committed, reserved, clean, self._mark.boot)
        write_mark(self.mark_path, mark)
        self._mark = mark
        self._marked_at = time.monotonic()

    # -- writing (the writer thread) -------------------------------------------------------

    def commit(
        self, batch: Sequence[tuple[Sequence[Encoded], tuple[str, str] | None]]
    ) -> list[list[StoredEvent | None]]:
        """Commit every (events, cursor) of ``batch`` in one transaction."""
        count = sum(len(events) for events, _ in batch)
        if self.head + count > self._mark.reserved:
            self._write_mark(self.head, self.head + count + RESERVE, clean=False)
        conn = self.connect()
        now = time.time()
        with _transaction(conn):
            results = self._insert_all(conn, [events for events, _ in batch], now)
            for _, cursor in batch:
                if cursor is not None:
                    conn.execute(_SET_CURSOR, cursor)
            head = max((s.seq for r in results for s in r if s is not None), default=self.head)
            conn.execute(_SET_META, ("high_water", str(head)))
        self.head = head
        return results

    @property
    def mark_behind(self) -> bool:
        """Whether the mark's ``committed`` is behind the head (see :meth:`refresh_mark`)."""
        return self.head > self._mark.committed

    def refresh_mark(self) -> None:
        """Record the head as ``committed`` in the mark (the writer does it at most once a
        second while committing, and once the log goes idle)."""
        if self.mark_behind:
            self._write_mark(self.head, self._mark.reserved, clean=False)

    def after_commit(self, retention_count: int | None, retention_age: float | None) -> None:
        """Between commits: keep the mark's ``committed`` recent, apply retention."""
        if time.monotonic() - self._marked_at > _MARK_EVERY:
            self.refresh_mark()
        now = time.time()
        if now - self.last_retention >= 1.0:
            self.last_retention = now
            self._apply_retention(retention_count, retention_age)

    def _insert_all(
        self, conn: sqlite3.Connection, batch: list[Sequence[Encoded]], now: float
    ) -> list[list[StoredEvent | None]]:
        """Insert in one statement when no id repeats (the common case), else row by row so
        that a duplicate gets no sequence and leaves no hole."""
        seq = self.head
        results: list[list[StoredEvent | None]] = []
        rows = []
        for events in batch:
            result: list[StoredEvent | None] = []
            for item in events:
                seq += 1
                stored = _stored(item, seq)
                result.append(stored)
                rows.append((seq, item.event.id, stored.channel, stored.type, stored.key, now,
                             stored.body))  # fmt: skip
            results.append(result)
        conn.execute("SAVEPOINT fast")
        if conn.executemany(_INSERT, rows).rowcount == len(rows):
            conn.execute("RELEASE fast")
            return results
        conn.execute("ROLLBACK TO fast")
        conn.execute("RELEASE fast")
        return self._insert_each(conn, batch, now)

    def _insert_each(
        self, conn: sqlite3.Connection, batch: list[Sequence[Encoded]], now: float
    ) -> list[list[StoredEvent | None]]:
        seq = self.head
        results: list[list[StoredEvent | None]] = []
        for events in batch:
            result: list[StoredEvent | None] = []
            for item in events:
                stored = _stored(item, seq + 1)
                row = (seq + 1, item.event.id, stored.channel, stored.type, stored.key, now,
                       stored.body)  # fmt: skip
                if conn.execute(_INSERT, row).rowcount == 0:
                    self.duplicates += 1
                    result.append(None)
                    continue
                seq += 1
                result.append(stored)
            results.append(result)
        return results

    def _apply_retention(self, count: int | None, age: float | None) -> None:
        conn = self.connect()
        bounds: list[int] = []
        if count is not None:
            bounds.append(self.head - count)
        if age is not None:
            row = conn.execute(
                "SELECT MAX(seq) FROM events WHERE appended_at < ?", (time.time() - age,)
            ).fetchone()
            bounds.append(int(row[0] or 0))
        through = max(bounds, default=0)
        if through <= self.purged_through:
            return
        self.ranges = [r for r in self.ranges if r.high > through]
        with _transaction(conn):
            conn.execute("DELETE FROM events WHERE seq <= ?", (through,))
            conn.execute(_SET_META, ("purged_through", str(through)))
            conn.execute(_SET_META, ("ranges", self._ranges_json()))
        self.purged_through = through

    def set_cursor(self, name: str, value: str) -> None:
        self.connect().execute(_SET_CURSOR, (name, value))

    def save_state(self, namespace: str, values: dict[str, str]) -> None:
        conn = self.connect()
        with _transaction(conn):
            conn.executemany(
                "INSERT INTO state VALUES (?, ?, ?) "
                "ON CONFLICT(namespace, key) DO UPDATE SET value=excluded.value",
                [(namespace, key, value) for key, value in values.items()],
            )

    def load_state(self, namespace: str) -> dict[str, str]:
        rows = self.connect().execute(
            "SELECT key, value FROM state WHERE namespace=?", (namespace,)
        )
        return {str(key): str(value) for key, value in rows}

    # -- reading (reader threads) ------------------------------------------------------------

    def read(
        self, after: int, limit: int, channel: str | None, max_bytes: int | None = None
    ) -> list[StoredEvent]:
        """Committed events with ``seq > after``, oldest first: at most ``limit`` of them and,
        with ``max_bytes``, no more once their bodies reach that many bytes (at least one)."""
        conn = self.connect()
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
        return list(_bounded(rows, max_bytes))

    def oldest(self) -> int:
        (low,) = self.connect().execute("SELECT MIN(seq) FROM events").fetchone()
        return int(low) if low is not None else self.head + 1

    def get_cursor(self, name: str) -> str | None:
        row = self.connect().execute("SELECT value FROM cursors WHERE name=?", (name,)).fetchone()
        return str(row[0]) if row else None


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction: committed when the block ends, rolled back if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _stored(item: Encoded, seq: int) -> StoredEvent:
    event = item.event
    body = b'%s,"sequence":%d}' % (item.json[:-1], seq)
    return StoredEvent(seq, event.channel, event.type, event.partitionkey, body)


def _bounded(rows: Any, max_bytes: int | None) -> Iterator[StoredEvent]:
    total = 0
    for seq, channel, type_, key, body in rows:
        yield StoredEvent(seq, channel, type_, key, bytes(body))
        total += len(body)
        if max_bytes is not None and total >= max_bytes:
            return
