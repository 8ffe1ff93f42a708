"""Live fan-out of committed events to SSE subscribers.

Overflow policy (``DISCONNECT``): every subscriber has a bounded buffer. Publishing never waits;
when a subscriber's buffer is full it is marked overflowed, its buffer is dropped and its stream
ends with a ``retry:`` hint. The client reconnects with ``Last-Event-ID`` and is replayed from the
log, so nothing is lost and a slow subscriber never slows the others or the source.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from common.eventlog import StoredEvent
from common.metrics import Metrics

__all__ = ["Hub", "Subscription"]


class Subscription:
    def __init__(self, hub: Hub, channel: str | None, maxsize: int) -> None:
        self.channel = channel
        self.maxsize = maxsize
        self.overflowed = False
        self.closed = False
        self._hub = hub
        self._buffer: deque[StoredEvent] = deque()
        self._wakeup = asyncio.Event()

    def offer(self, event: StoredEvent) -> None:
        if self.overflowed or self.closed:
            return
        if len(self._buffer) >= self.maxsize:
            self.overflowed = True
            self._buffer.clear()
            self._hub.metrics.sse_overflow.inc()
        else:
            self._buffer.append(event)
        self._wakeup.set()

    async def next_batch(self) -> list[StoredEvent] | None:
        """Everything buffered (waiting if empty); ``None`` once overflowed or closed."""
        while not self._buffer:
            if self.overflowed or self.closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.overflowed:
            return None
        batch = list(self._buffer)
        self._buffer.clear()
        return batch

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self._hub.unsubscribe(self)


class Hub:
    def __init__(self, *, metrics: Metrics, queue_size: int = 1000) -> None:
        self.metrics = metrics
        self.queue_size = queue_size
        self._subscribers: set[Subscription] = set()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def subscribe(self, channel: str | None = None) -> Subscription:
        subscription = Subscription(self, channel, self.queue_size)
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
