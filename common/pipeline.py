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
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from common.envelope import CloudEvent, new_event
from common.eventlog import Encoded, EventLog, StoredEvent
from common.metrics import Metrics
from common.normalize import Rejected
from common.schema import DEAD_LETTER_CHANNEL

__all__ = ["DEAD_LETTER_CHANNEL", "Check", "Pipeline", "Readiness", "Source"]

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
    def __init__(
        self,
        *,
        beat: str,
        log: EventLog,
        metrics: Metrics,
        readiness: Readiness,
        dead_letter_extensions: Mapping[str, Any] | None = None,
    ) -> None:
        """``dead_letter_extensions``: added to every dead letter of this beat, however it
        arises (the OpenCTI beat marks them ``tlp: red``)."""
        self.beat = beat
        self.log = log
        self.metrics = metrics
        self.readiness = readiness
        self.dead_letter_extensions = dict(dead_letter_extensions or {})

    def received(self, count: int = 1) -> None:
        self.metrics.received.inc(count)

    def submit(
        self, events: Sequence[CloudEvent], *, cursor: tuple[str, str] | None = None
    ) -> _Committed:
        """Queue events for the next group commit; see the module docstring for ack timing.
        ``cursor=(name, value)`` is saved atomically with the events (resumable sources).

        Each event is encoded here, before the group commit: one that cannot be encoded (a
        normaliser let through something JSON cannot carry) is replaced by a dead letter that
        says why, so it fails alone and the input is still acknowledged and kept."""
        future = self.log.submit([self._encode(event) for event in events], cursor=cursor)
        future.add_done_callback(self._count)
        return future

    def _encode(self, event: CloudEvent) -> Encoded:
        try:
            return Encoded.of(event)
        except (ValueError, RecursionError) as exc:
            reason = f"the event cannot be encoded as JSON: {str(exc)[:300]}"
            _log.warning("%s event %s of %s: %s", self.beat, event.id, event.source, reason)
            dead = self.rejected(
                raw=_best_effort_json(event),
                reason=reason,
                source=event.source,
                context={"type": event.type, "id": event.id, "channel": event.channel},
            )
            return Encoded.of(dead)

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
        whole: tuple[int, str] | None = None,
        **extensions: Any,
    ) -> CloudEvent:
        """Count a rejected input and return the dead-letter event that keeps it (submit it
        with the other events of the same input batch, to keep acknowledgements in order).
        ``extensions`` are added to the event (for example ``tlp``)."""
        self.metrics.rejected.inc()
        _log.info("rejected input from %s: %s", source, reason)
        extensions = {**self.dead_letter_extensions, **extensions}
        return dead_letter_event(
            beat=self.beat,
            raw=raw,
            reason=reason,
            source=source,
            context=context,
            whole=whole,
            **extensions,
        )

    def guarded(
        self,
        normalize: Callable[[], list[CloudEvent]],
        *,
        raw: bytes | str,
        source: str,
        context: Mapping[str, Any] | None = None,
        whole: tuple[int, str] | None = None,
        **extensions: Any,
    ) -> list[CloudEvent]:
        """Run a normaliser on one input: its events, or the dead letter that keeps the input
        with the reason. A normaliser that raises anything but :class:`Rejected` (a bug) fails
        this input alone too: logged with its traceback, counted
        (``beats_source_errors{kind="normaliser"}``) and dead-lettered."""
        try:
            return normalize()
        except Rejected as rejected:
            reason = rejected.reason
        except Exception as exc:
            _log.exception("%s: the normaliser failed on one input from %s", self.beat, source)
            self.metrics.source_errors.labels("normaliser").inc()
            reason = f"the normaliser failed: {type(exc).__name__}: {str(exc)[:300]}"
        return [
            self.rejected(
                raw=raw, reason=reason, source=source, context=context, whole=whole, **extensions
            )
        ]

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
    whole: tuple[int, str] | None = None,
    **extensions: Any,
) -> CloudEvent:
    """The event that keeps a rejected input: reason, size, digest and the raw input (or its
    first 64 KiB), as text when it is UTF-8 and as base64 otherwise. ``time`` is when it was
    rejected. The context is kept only if it can be encoded (else ``context_error`` says so).
    ``whole``: the (size, SHA-256) of the input when ``raw`` is only its beginning (an input
    too large to have been read into memory)."""
    data_bytes = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    kept = data_bytes[:_RAW_KEPT]
    size, digest = whole or (len(data_bytes), hashlib.sha256(data_bytes).hexdigest())
    data: dict[str, Any] = {
        "reason": reason,
        "size": size,
        "sha256": digest,
        "truncated": len(kept) < size,
        "context": _encodable(dict(context or {})),
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
        time=datetime.now(UTC),
        data=data,
        **extensions,
    )


def _encodable(context: dict[str, Any]) -> dict[str, Any]:
    try:
        json.dumps(context, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, TypeError, RecursionError):
        return {"context_error": "the context could not be encoded as JSON"}
    return context


def _best_effort_json(event: CloudEvent) -> str:
    """The event as ASCII JSON text (lone surrogates escaped), or why even that failed."""
    try:
        return json.dumps(event.model_dump(mode="python"), ensure_ascii=True, default=str)
    except (ValueError, TypeError, RecursionError) as exc:
        return f"<unencodable event: {type(exc).__name__}>"
