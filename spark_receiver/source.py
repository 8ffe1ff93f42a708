"""``spark.readStream.format("beats")``: a beat's (or the gateway's) SSE feed as a stream.

Offsets are the beats' sequences (the SSE ids): ``{"sequence": N}`` means "everything up to and
including N has been read". Options:

* ``url`` (required): ``http://beat:8101/events`` or ``.../events/<channel>`` (or a gateway
  stream URL);
* ``token``: bearer token (the gateway's);
* ``startingSequence`` (default ``0``: everything the beat's log still holds): where a query
  without a checkpoint starts; ``N`` means "after N";
* ``maxEventsPerBatch`` (default ``20000``): cap of one micro-batch;
* ``maxBuffered`` (default ``100000``): events the driver-side reader keeps ahead of Spark;
  when full it stops reading the socket (the beat then drops the connection as a slow
  subscriber, and the reader resumes from its ``Last-Event-ID``; nothing is lost);
* ``onGap`` (``fail``, default, or ``continue``): what to do when the beat says events after the
  requested position are gone (``beats.gap``, retention): fail the query, or log and go on;
* ``timeout`` (default ``60``): seconds without a byte (the beats send a heartbeat every 15 s)
  before the connection is considered dead and reopened.

How it reads (a :class:`SimpleDataSourceStreamReader`): Spark keeps one reader object per query
in one long-lived Python process on the driver. On its first ``read`` it starts a daemon thread
that holds one SSE connection (``Last-Event-ID`` = the start offset), reconnects with backoff
from the last sequence seen, and buffers events (bounded). ``read(start)`` hands Spark the
buffered events after ``start``; ``commit(end)`` drops what Spark has committed.

Restart: a query restarted from its checkpoint starts a fresh reader process. If the last
batch was planned but not committed, Spark asks for exactly that range again through
:meth:`BeatsStreamReader.readBetweenOffsets`, which runs on an executor, statelessly: it opens
the stream with ``Last-Event-ID: start`` and stops at ``end``. So the source is replayable and
the query sees every sequence exactly once; sinks must still be idempotent per batch id (Spark
hands a replayed batch to ``foreachBatch`` again), see :mod:`spark_receiver.sinks`.
"""

# Spark's data source API names its methods in camelCase.
# ruff: noqa: N802

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import httpx
from pyspark.sql.datasource import DataSource, SimpleDataSourceStreamReader
from pyspark.sql.types import StructType

from spark_receiver._http import Backoff, GapError, stream_after
from spark_receiver.events import EVENT_SCHEMA, Row, event_to_row, rows_to_batch

__all__ = ["BeatsDataSource", "BeatsStreamReader", "Follower"]

_log = logging.getLogger(__name__)
_FATAL = {400, 401, 403, 404, 410}


class BeatsDataSource(DataSource):
    """The ``beats`` streaming source (see the module docstring for options and offsets)."""

    @classmethod
    def name(cls) -> str:
        return "beats"

    def schema(self) -> str:
        return EVENT_SCHEMA

    def simpleStreamReader(self, schema: StructType) -> BeatsStreamReader:
        if "url" not in self.options:
            raise ValueError('format("beats") needs .option("url", "http://beat/events...")')
        return BeatsStreamReader({key.lower(): value for key, value in self.options.items()})


class Follower:
    """One SSE connection on a daemon thread, buffering ``(sequence, row)`` after a position."""

    def __init__(self, options: dict[str, str], after: int) -> None:
        self.url = options["url"]
        self.token = options.get("token")
        self.on_gap = options.get("ongap", "fail")
        self.timeout = float(options.get("timeout", "60"))
        self.capacity = int(options.get("maxbuffered", "100000"))
        self.floor = after
        self.error: BaseException | None = None
        self._last = after
        self._buffer: deque[tuple[int, Row]] = deque()
        self._lock = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="beats-sse", daemon=True)
        self._thread.start()

    def take(self, after: int, limit: int) -> list[tuple[int, Row]]:
        """Up to ``limit`` buffered events with a sequence greater than ``after``."""
        with self._lock:
            if self.error is not None:
                raise self.error
            taken = [item for item in self._buffer if item[0] > after]
            return taken[:limit]

    def trim(self, through: int) -> None:
        """Forget events up to ``through`` (committed by Spark) and wake a waiting reader."""
        with self._lock:
            while self._buffer and self._buffer[0][0] <= through:
                self._buffer.popleft()
            self.floor = max(self.floor, through)
            self._lock.notify_all()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify_all()

    def _run(self) -> None:
        backoff = Backoff()
        timeout = httpx.Timeout(10.0, read=self.timeout)
        with httpx.Client(timeout=timeout) as client:
            while not self._stopped:
                try:
                    for record in stream_after(
                        client, self.url, after=self._last, token=self.token, on_gap=self.on_gap
                    ):
                        self._append(record.sequence, event_to_row(record.event))
                        backoff.reset()
                        if self._stopped:
                            return
                except (GapError, httpx.HTTPStatusError) as exc:
                    if not _retryable(exc):
                        with self._lock:
                            self.error = exc
                        return
                    _log.warning("beats source: %s; reconnecting", exc)
                except (httpx.TransportError, ValueError) as exc:
                    _log.warning("beats source: %s; reconnecting", exc)
                with self._lock:
                    self._lock.wait(backoff.next())

    def _append(self, sequence: int, row: Row) -> None:
        with self._lock:
            while len(self._buffer) >= self.capacity and not self._stopped:
                self._lock.wait()
            self._buffer.append((sequence, row))
            self._last = sequence


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code not in _FATAL
    return False


class BeatsStreamReader(SimpleDataSourceStreamReader):
    """Offsets ``{"sequence": N}``; see the module docstring for the restart contract."""

    def __init__(self, options: dict[str, str]) -> None:
        self.options = options
        self.max_batch = int(options.get("maxeventsperbatch", "20000"))
        self._follower: Follower | None = None

    def initialOffset(self) -> dict[str, int]:
        return {"sequence": int(self.options.get("startingsequence", "0"))}

    def read(self, start: dict[str, Any]) -> tuple[Iterator[Any], dict[str, Any]]:
        after = int(start["sequence"])
        follower = self._follower
        if follower is None or after < follower.floor:
            if follower is not None:
                follower.stop()
            follower = self._follower = Follower(self.options, after)
        taken = follower.take(after, self.max_batch)
        if not taken:
            return iter(()), start
        return iter([rows_to_batch([row for _, row in taken])]), {"sequence": taken[-1][0]}

    def readBetweenOffsets(self, start: dict[str, Any], end: dict[str, Any]) -> Iterator[Any]:
        """Replay ``(start, end]`` statelessly (runs on an executor after a restart)."""
        rows = read_range(self.options, int(start["sequence"]), int(end["sequence"]))
        return iter([rows_to_batch(rows)] if rows else [])

    def commit(self, end: dict[str, Any]) -> None:
        if self._follower is not None:
            self._follower.trim(int(end["sequence"]))


def read_range(options: dict[str, str], after: int, through: int) -> list[Row]:
    """Every event with ``after < sequence <= through``, read with ``Last-Event-ID: after``.

    A stream that ends early (the beat restarted, or dropped us) is reopened from the last
    sequence read, a few times with backoff; a ``beats.gap`` fails the replay (``onGap=fail``).
    """
    rows: list[Row] = []
    backoff, attempts = Backoff(), int(options.get("replayattempts", "8"))
    timeout = httpx.Timeout(10.0, read=float(options.get("timeout", "60")))
    with httpx.Client(timeout=timeout) as client:
        while after < through:
            after = _read_into(rows, client, options, after, through)
            if after < through:
                attempts -= 1
                if attempts < 0:
                    raise RuntimeError(f"could not replay events up to {through} (at {after})")
                time.sleep(backoff.next())
    return rows


def _read_into(
    rows: list[Row], client: httpx.Client, options: dict[str, str], after: int, through: int
) -> int:
    records = stream_after(
        client,
        options["url"],
        after=after,
        token=options.get("token"),
        on_gap=options.get("ongap", "fail"),
    )
    try:
        for record in records:
            if record.sequence > through:
                return through
            rows.append(event_to_row(record.event))
            after = record.sequence
            if after == through:
                break
    except httpx.TransportError as exc:
        _log.warning("beats replay: %s after %d; reopening", exc, after)
    return after
