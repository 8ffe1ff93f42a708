"""Live fan-out of committed events to SSE subscribers.

Overflow policy (``DISCONNECT``): every subscriber has a buffer bounded both in events
(``queue_size``) and in bytes of event JSON (``queue_bytes``). Publishing never waits; when an
event would take a subscriber's buffer past either bound it is marked overflowed, its buffer is
dropped (the events stay in the log) and its stream ends with a ``retry:`` hint; the disconnect
is logged and counted. The client reconnects with ``Last-Event-ID`` and is replayed from the
log, so nothing is lost and a slow subscriber never slows the others or the source.

An event larger than ``queue_bytes`` on its own is still accepted by an empty buffer: a bound
smaller than one event must not cut every live subscriber off at each such event.

The events are shared by every subscriber (one object per committed event); the bounds are per
subscriber, so N stalled subscribers hold at most N times ``queue_bytes`` (less when they hold the
same events).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable

from common.eventlog import StoredEvent
from common.metrics import Metrics

__all__ = ["Hub", "Subscription"]

_log = logging.getLogger(__name__)


class Subscription:
    def __init__(
        self, hub: Hub, channel: str | None, maxsize: int, max_bytes: int | None = None
    ) -> None:
        self.channel = channel
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.overflowed = False
        self.closed = False
        self.buffered_bytes = 0
        self._hub = hub
        self._buffer: deque[StoredEvent] = deque()
        self._wakeup = asyncio.Event()

    def offer(self, event: StoredEvent) -> None:
        if self.overflowed or self.closed:
            return
        size = len(event.body)
        full = len(self._buffer) >= self.maxsize
        too_big = (
            self.max_bytes is not None
            and len(self._buffer) > 0
            and self.buffered_bytes + size > self.max_bytes
        )
        if full or too_big:
            self._overflow(event, "events" if full else "bytes")
        else:
            self._buffer.append(event)
            self.buffered_bytes += size
        self._wakeup.set()

    def _overflow(self, event: StoredEvent, bound: str) -> None:
        _log.info(
            "sse: a subscriber of %s overflowed its buffer (%d events, %d bytes, bound in %s) "
            "at sequence %d; disconnected, it resumes with Last-Event-ID",
            self.channel or "every channel",
            len(self._buffer),
            self.buffered_bytes,
            bound,
            event.seq,
        )
        self.overflowed = True
        self._buffer.clear()
        self.buffered_bytes = 0
        self._hub.metrics.sse_overflow.inc()

    async def next_batch(self, max_bytes: int | None = None) -> list[StoredEvent] | None:
        """The oldest buffered events (waiting if empty), at most about ``max_bytes`` of them
        (at least one event; the rest stay buffered and counted); ``None`` once overflowed or
        closed."""
        while not self._buffer:
            if self.overflowed or self.closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.overflowed:
            return None
        batch: list[StoredEvent] = []
        size = 0
        while self._buffer and (max_bytes is None or not batch or size < max_bytes):
            event = self._buffer.popleft()
            batch.append(event)
            size += len(event.body)
        self.buffered_bytes -= size
        return batch

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self._hub.unsubscribe(self)


class Hub:
    def __init__(
        self, *, metrics: Metrics, queue_size: int = 1000, queue_bytes: int | None = None
    ) -> None:
        self.metrics = metrics
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self._subscribers: set[Subscription] = set()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def subscribe(self, channel: str | None = None) -> Subscription:
        subscription = Subscription(self, channel, self.queue_size, self.queue_bytes)
        self._subscribers.add(subscription)
        self.metrics.sse_subscribers.set(len(self._subscribers))
        self.metrics.sse_connections.inc()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)
        self.metrics.sse_subscribers.set(len(self._subscribers))

    def publish(self, events: Iterable[StoredEvent]) -> None:
        """Offer committed events to every matching subscriber; never blocks."""
        events = list(events)
        for subscription in list(self._subscribers):
            channel = subscription.channel
            for event in events:
                if channel is None or channel == event.channel:
                    subscription.offer(event)

    def close(self) -> None:
        """End every stream (shutdown); clients reconnect elsewhere or later and resume."""
        for subscription in list(self._subscribers):
            subscription.close()
