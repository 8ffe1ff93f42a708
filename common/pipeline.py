"""The seam between a source and the rest of a beat.

A :class:`Source` has one method, ``run(pipeline)``: it connects to its upstream, feeds what it
receives through the pipeline, and reconnects on its own when the upstream goes away. It runs
until cancelled; raising makes the supervisor restart it with backoff.

Ack timing: a source acknowledges its upstream only after the future returned by
:meth:`Pipeline.submit` (or :meth:`Pipeline.dead_letter`) has resolved without error — that is
after the events are committed to the log. If the future fails (:class:`LogUnavailable`) the
source must not acknowledge, so the upstream keeps the input and delivers it again.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from common.envelope import CloudEvent, new_event
from common.eventlog import EventLog, StoredEvent
from common.metrics import Metrics

__all__ = ["DEAD_LETTER_CHANNEL", "Check", "Pipeline", "Readiness", "Source"]

DEAD_LETTER_CHANNEL = "deadletter"
_log = logging.getLogger(__name__)
_RAW_KEPT = 64 * 1024


class Source(Protocol):
    async def run(self, pipeline: Pipeline) -> None: ...


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str = ""


class Readiness:
    """Named readiness checks; ``/readyz`` is ready when every check is ok."""

    def __init__(self) -> None:
        self.checks: dict[str, Check] = {}

    def set(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks[name] = Check(ok, detail)

    @property
    def ready(self) -> bool:
        return all(check.ok for check in self.checks.values())


_Committed = asyncio.Future[list[StoredEvent | None]]


class Pipeline:
    def __init__(self, *, beat: str, log: EventLog, metrics: Metrics, readiness: Readiness) -> None:
        self.beat = beat
        self.log = log
        self.metrics = metrics
        self.readiness = readiness

    def received(self, count: int = 1) -> None:
        self.metrics.received.inc(count)

    def submit(
        self, events: Sequence[CloudEvent], *, cursor: tuple[str, str] | None = None
    ) -> _Committed:
        """Queue events for the next group commit; see the module docstring for ack timing.
        ``cursor=(name, value)`` is saved atomically with the events (resumable sources)."""
        future = self.log.submit(events, cursor=cursor)
        future.add_done_callback(self._count)
        return future

    async def commit(
        self, events: Sequence[CloudEvent], *, cursor: tuple[str, str] | None = None
    ) -> list[StoredEvent | None]:
        return await self.submit(events, cursor=cursor)

    def rejected(
        self,
        *,
        raw: bytes | str,
        reason: str,
        source: str,
        context: Mapping[str, Any] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> CloudEvent:
        """Count a rejected input and return the dead-letter event that keeps it (submit it
        with the other events of the same input batch, to keep acknowledgements in order).
        ``extensions`` are added to the event (the OpenCTI beat marks its dead letters red)."""
        self.metrics.rejected.inc()
        _log.info("rejected input from %s: %s", source, reason)
        return dead_letter_event(
            beat=self.beat,
            raw=raw,
            reason=reason,
            source=source,
            context=context,
            extensions=extensions,
        )

    def dead_letter(
        self,
        *,
        raw: bytes | str,
        reason: str,
        source: str,
        context: Mapping[str, Any] | None = None,
    ) -> _Committed:
        """Keep a rejected input, with its reason, in the dead-letter channel (counted)."""
        return self.submit([self.rejected(raw=raw, reason=reason, source=source, context=context)])

    def set_ready(self, name: str, ok: bool, detail: str = "") -> None:
        self.readiness.set(name, ok, detail)

    def _count(self, future: _Committed) -> None:
        if future.cancelled() or future.exception() is not None:
            self.metrics.append_errors.inc()
            return
        per_channel = Counter(s.channel for s in future.result() if s is not None)
        self.metrics.duplicates.inc(sum(1 for s in future.result() if s is None))
        for channel, count in per_channel.items():
            self.metrics.committed.labels(channel).inc(count)
        self.metrics.dead_lettered.inc(per_channel.get(DEAD_LETTER_CHANNEL, 0))


def dead_letter_event(
    *,
    beat: str,
    raw: bytes | str,
    reason: str,
    source: str,
    context: Mapping[str, Any] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> CloudEvent:
    """The event that keeps a rejected input: reason, size, digest and the raw input (or its
    first 64 KiB), as text when it is UTF-8 and as base64 otherwise."""
    data_bytes = raw.encode() if isinstance(raw, str) else raw
    kept = data_bytes[:_RAW_KEPT]
    data: dict[str, Any] = {
        "reason": reason,
        "size": len(data_bytes),
        "sha256": hashlib.sha256(data_bytes).hexdigest(),
        "truncated": len(kept) < len(data_bytes),
        "context": dict(context or {}),
    }
    try:
        data["raw"] = kept.decode("utf-8")
    except UnicodeDecodeError:
        data["raw_base64"] = base64.b64encode(kept).decode("ascii")
    return new_event(
        beat=beat,
        type=f"beats.{beat}.deadletter",
        source=source,
        channel=DEAD_LETTER_CHANNEL,
        partitionkey=DEAD_LETTER_CHANNEL,
        data=data,
        **dict(extensions or {}),
    )
