"""The durable local event log: SQLite in WAL mode, group commit, monotonic sequences.

Contract
--------
* :meth:`EventLog.append` is the commit point. When it returns, the events are in the database
  file and survive ``kill -9`` of the process (WAL with ``synchronous=NORMAL``; ``full`` survives
  power loss as well). Only then may a source acknowledge its upstream.
* Events are encoded before they are queued (:class:`~common.logdb.Encoded`): an event that
  cannot be encoded fails its own submission, never the group commit it would have joined.
* Concurrent appends are coalesced into one transaction (group commit) by a single writer task,
  in arrival order, so sequences follow the order in which appends were called.
* **The writer cannot die of a batch.** Whatever one commit raises (a storage error, or anything
  unexpected) fails that batch alone: its futures get :class:`LogUnavailable`, so its sources do
  not acknowledge and receive the input again; the failure is logged and counted, and the writer
  takes the next batch. A listener that raises is logged and counted too.
* Sequences start at 1, only grow and are **never issued twice**, even after retention deleted
  every row, and even when the database or its WAL is lost: the high-water mark beside the
  database (:mod:`common.highwater`) survives that, and the log continues above it. The range it
  gives up is kept (:attr:`EventLog.ranges`) so replays can signal it (:mod:`common.sse`).
* An event whose ``id`` is already in the log is skipped (counted as a duplicate) and gets no new
  sequence: sources with natural ids (OpenCTI stream ids, Ditto revisions) are deduplicated here.
* Retention by count and by age runs in the writer, between commits. Ids older than what is kept
  are reported by :attr:`EventLog.purged_through` so replays can signal the gap.
* Cursors (``kafka`` for the forwarder, a source position for resumable sources) are stored in
  the same database, so a cursor is never ahead of the events it points at.
* Readiness (:meth:`EventLog.check`) is the outcome of the latest commit, or of a probe commit
  when none happened recently: it says whether the log can commit *now*.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from common.envelope import CloudEvent
from common.highwater import Recovery
from common.logdb import Encoded, GapRange, LogDamaged, LogDatabase, StoredEvent

__all__ = ["Encoded", "EventLog", "GapRange", "LogDamaged", "LogUnavailable", "StoredEvent"]

_log = logging.getLogger(__name__)


class LogUnavailable(RuntimeError):
    """The log could not commit (disk full, read-only, closed). Nothing was acknowledged."""


@dataclass(slots=True)
class _Pending:
    events: Sequence[Encoded]
    future: asyncio.Future[list[StoredEvent | None]]
    cursor: tuple[str, str] | None = None


_Listener = Callable[[list[StoredEvent]], None]
_Committed = asyncio.Future[list[StoredEvent | None]]


class EventLog:
    def __init__(
        self,
        path: Path,
        *,
        retention_count: int | None = 1_000_000,
        retention_age: float | None = 7 * 24 * 3600.0,
        synchronous: Literal["normal", "full"] = "normal",
        check: Literal["quick", "full", "off"] = "quick",
        max_batch: int = 2000,
        observe_commit: Callable[[float], None] | None = None,
        observe_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.retention_count = retention_count
        self.retention_age = retention_age
        self.max_batch = max_batch
        self.db = LogDatabase(path, synchronous=synchronous, check=check)
        self.last_error: str | None = None
        self._observe_commit = observe_commit
        self._observe_failure = observe_failure
        self._outcome_at: float | None = None
        self._listeners: list[_Listener] = []
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._appended = asyncio.Event()
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="eventlog-write")
        self._reader_pool = ThreadPoolExecutor(2, thread_name_prefix="eventlog-read")
        self._writer: asyncio.Task[None] | None = None
        self._probe: _Committed | None = None
        self._closed = False

    @property
    def head(self) -> int:
        """The newest sequence issued (or given up at a recovery)."""
        return self.db.head

    @property
    def purged_through(self) -> int:
        return self.db.purged_through

    @property
    def ranges(self) -> list[GapRange]:
        return self.db.ranges

    @property
    def recovery(self) -> Recovery | None:
        return self.db.recovery

    @property
    def duplicates(self) -> int:
        return self.db.duplicates

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Open, check and recover the database (:class:`LogDamaged` when it cannot be used)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        recovery = await loop.run_in_executor(self._writer_pool, self.db.open)
        if recovery.kind == "lost":
            _log.error(
                "event log %s: EVENTS LOST: %s; sequences %d..%d are given up, the log "
                "continues at %d and resuming clients are told of the gap",
                self.path, recovery.reason, recovery.low + 1, recovery.high, recovery.high + 1,
            )  # fmt: skip
        elif recovery.kind == "skipped":
            _log.warning("event log %s: %s; continuing at %d", self.path, recovery.reason,
                         recovery.high + 1)  # fmt: skip
        self._writer = asyncio.create_task(self._write_loop(), name=f"eventlog-writer:{self.path}")

    async def close(self, *, timeout: float = 10.0) -> None:
        """Commit what is queued (for at most ``timeout`` seconds), then close. Appends after
        this raise :class:`LogUnavailable`. A close with every commit done is recorded as clean
        in the high-water mark."""
        self._closed = True
        drained = True
        if self._writer is not None:
            try:
                await asyncio.wait_for(self._queue.join(), timeout)
            except TimeoutError:
                drained = False
                _log.warning("event log %s: commits still pending at close", self.path)
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._fail_queued()
        clean = drained and self._writer is not None and self.last_error is None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(RuntimeError):  # the pool may be gone if open() failed
            await loop.run_in_executor(self._writer_pool, lambda: self.db.close(clean=clean))
        self._writer = None
        self._writer_pool.shutdown(wait=False)
        self._reader_pool.shutdown(wait=False)

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
        self, events: Sequence[CloudEvent | Encoded], *, cursor: tuple[str, str] | None = None
    ) -> list[StoredEvent | None]:
        """Commit ``events``; returns one entry per event, ``None`` for a skipped duplicate."""
        return await self.submit(events, cursor=cursor)

    def submit(
        self, events: Sequence[CloudEvent | Encoded], *, cursor: tuple[str, str] | None = None
    ) -> _Committed:
        """Queue ``events`` for the next group commit; the future resolves after the commit.

        Lets a source pipeline many inputs and acknowledge each one from a done-callback, in
        order, without awaiting each commit in turn. ``cursor=(name, value)`` is stored in the
        same transaction as the events: a resumable source's position never runs ahead of (or
        behind) what it committed. An event that cannot be encoded fails this submission only
        (``ValueError``); :meth:`common.pipeline.Pipeline.submit` dead-letters such events first.
        """
        future: _Committed = asyncio.get_running_loop().create_future()
        if self._closed or self._writer is None or self._writer.done():
            future.set_exception(LogUnavailable("event log is closed"))
            return future
        try:
            encoded = [e if isinstance(e, Encoded) else Encoded.of(e) for e in events]
        except (ValueError, RecursionError) as exc:
            future.set_exception(ValueError(f"an event cannot be encoded: {exc}"))
            return future
        self._queue.put_nowait(_Pending(encoded, future, cursor))
        return future

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._next()]
            count = len(batch[0].events)
            while not self._queue.empty() and count < self.max_batch:
                item = self._queue.get_nowait()
                batch.append(item)
                count += len(item.events)
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _next(self) -> _Pending:
        """The next submission; while waiting, the high-water mark catches up with the head
        once the log has been idle for a second."""
        while True:
            if not self.db.mark_behind:
                return await self._queue.get()
            try:
                return await asyncio.wait_for(self._queue.get(), 1.0)
            except TimeoutError:
                loop = asyncio.get_running_loop()
                try:
                    await loop.run_in_executor(self._writer_pool, self.db.refresh_mark)
                except OSError:
                    _log.exception("event log %s: the high-water mark cannot be written",
                                   self.path)  # fmt: skip
                    return await self._queue.get()

    async def _commit(self, batch: list[_Pending]) -> None:
        """One group commit; whatever it raises fails this batch only (see the contract)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            results = await loop.run_in_executor(self._writer_pool, self._commit_sync, batch)
        except Exception as exc:
            self._failed(batch, exc)
            return
        self.last_error = None
        self._outcome_at = loop.time()
        if self._observe_commit is not None:
            self._observe_commit(loop.time() - started)
        self._deliver(batch, results)

    def _commit_sync(self, batch: list[_Pending]) -> list[list[StoredEvent | None]]:
        results = self.db.commit([(item.events, item.cursor) for item in batch])
        try:
            self.db.after_commit(self.retention_count, self.retention_age)
        except (sqlite3.Error, OSError):
            _log.exception("retention or high-water mark update failed; retried later")
        return results

    def _failed(self, batch: list[_Pending], exc: Exception) -> None:
        storage = isinstance(exc, sqlite3.Error | OSError)
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._outcome_at = asyncio.get_running_loop().time()
        if storage:
            _log.warning("event log %s: commit failed: %s", self.path, self.last_error)
        else:
            _log.error("event log %s: unexpected failure of a commit; its %d inputs will be "
                       "redelivered", self.path, len(batch), exc_info=exc)  # fmt: skip
        if self._observe_failure is not None:
            self._observe_failure("storage" if storage else "unexpected")
        for item in batch:
            if not item.future.done():
                item.future.set_exception(LogUnavailable(self.last_error))

    def _deliver(self, batch: list[_Pending], results: list[list[StoredEvent | None]]) -> None:
        committed = [stored for result in results for stored in result if stored is not None]
        for listener in self._listeners:
            try:
                listener(committed)
            except Exception:
                _log.exception("event log %s: a listener failed", self.path)
                if self._observe_failure is not None:
                    self._observe_failure("listener")
        if committed:
            self._appended.set()
            self._appended = asyncio.Event()
        for item, result in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)

    def _fail_queued(self) -> None:
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(LogUnavailable("event log is closed"))
            self._queue.task_done()

    async def wait_for_append(self, timeout: float) -> None:
        """Return after the next commit, or after ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._appended.wait(), timeout)

    # -- readiness -------------------------------------------------------------------------

    async def check(self, *, max_age: float = 5.0, timeout: float = 2.0) -> tuple[bool, str]:
        """Whether the log can commit now, and why not: the latest commit's outcome when it is
        at most ``max_age`` seconds old, else the outcome of a probe commit (an empty one,
        which still writes) awaited for at most ``timeout`` seconds."""
        if self._closed or self._writer is None:
            return False, "the event log is closed"
        if self._writer.done():
            return False, "the event log's writer stopped"
        now = asyncio.get_running_loop().time()
        if self._outcome_at is None or now - self._outcome_at > max_age:
            if self._probe is None or self._probe.done():
                self._probe = self.submit([])
            try:
                await asyncio.wait_for(asyncio.shield(self._probe), timeout)
            except TimeoutError:
                return False, f"no commit completed within {timeout:g}s (writer stuck?)"
            except LogUnavailable:
                pass  # last_error says why
        if self.last_error is not None:
            return False, f"commits fail: {self.last_error}"
        return True, "writable"

    # -- reading ---------------------------------------------------------------------------

    async def read(
        self,
        *,
        after: int,
        limit: int = 500,
        channel: str | None = None,
        max_bytes: int | None = None,
    ) -> list[StoredEvent]:
        """Committed events with ``seq > after``, oldest first: at most ``limit``, and no more
        once ``max_bytes`` of bodies are read (always at least one)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._reader_pool, self.db.read, after, limit, channel, max_bytes
        )

    async def oldest(self) -> int:
        """The smallest sequence kept (``head + 1`` when the log is empty)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, self.db.oldest)

    async def get_cursor(self, name: str) -> str | None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, self.db.get_cursor, name)

    async def set_cursor(self, name: str, value: str) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer_pool, self.db.set_cursor, name, value)

    # -- small durable maps a source keeps beside its events ------------------------------

    async def load_state(self, namespace: str) -> dict[str, str]:
        """The ``namespace`` map saved by :meth:`save_state` (empty when none was)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, self.db.load_state, namespace)

    async def save_state(self, namespace: str, values: Mapping[str, str]) -> None:
        """Add or replace ``values`` in the ``namespace`` map, durably, in a transaction of
        their own (the OpenCTI beat keeps the marking definitions it learned here). Runs on the
        writer thread, so it is ordered with the commits queued after it returns."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer_pool, self.db.save_state, namespace, dict(values))

    def _connect(self) -> sqlite3.Connection:
        """The calling thread's connection (tests use it to inject storage faults)."""
        return self.db.connect()
