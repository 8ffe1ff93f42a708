"""What every upstream of the gateway shares: a position, subscribers and a ring of events.

An upstream is one ordered sequence of events with increasing integer positions: a beat's
SSE stream (positions are the beat's sequences, :mod:`gateway.upstream`) or one Kafka
topic-partition (positions are offsets, :mod:`gateway.kafka`). Clients subscribe to it
(:mod:`gateway.clients`) and read what they missed from its ring or from :meth:`replay`.

The ring keeps the most recent events: it holds *every* event of the stream with a position
in ``(ring_base, head]``, which is what lets a client's replay be served from memory. It is
bounded by ``--ring-size`` events and ``--ring-bytes`` (:attr:`Frame.size`): the oldest events
are evicted, and ``ring_base`` moves up to the last one evicted, until both bounds hold (an
event larger than ``--ring-bytes`` alone is not kept). A gap signal clears the ring and is
passed on to the subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Hashable
from typing import Protocol

from gateway.frames import Frame

__all__ = ["RingStream", "Subscriber"]

_log = logging.getLogger(__name__)


class Subscriber(Protocol):
    def offer(self, frame: Frame) -> None: ...


class RingStream:
    """The shared part of an upstream; subclasses read their source and call :meth:`receive`."""

    label: str
    """How clients and logs name the stream (a merged stream's position vector uses it)."""
    channel: str | None
    """The beat's channel it carries (``None``: every channel of the beat)."""

    def __init__(self, key: Hashable, *, beat: str, ring_size: int, ring_bytes: int) -> None:
        self.key = key
        self.beat = beat
        self.head: int | None = None
        self.ring: deque[Frame] = deque()
        self.ring_base: int | None = None
        self.ring_size = ring_size
        self.ring_bytes = ring_bytes
        self.ring_held = 0
        """Bytes of the frames in the ring (:attr:`Frame.size`)."""
        self.positioned = asyncio.Event()
        """Set once ``head`` is known, or once the source could not tell it (it is down): what
        a live client's answer waits for (:meth:`gateway.clients.ClientStream.positioned`)."""
        self.connected = False
        self.refs = 0
        self.subscribers: set[Subscriber] = set()

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    async def run(self) -> None:
        """Read the source forever (a task of :class:`gateway.upstream.UpstreamPool`)."""
        raise NotImplementedError

    def replay(self, after: int) -> contextlib.AbstractAsyncContextManager[AsyncIterator[Frame]]:
        """A dedicated read of the source after position ``after``: every event from there on,
        then the live ones, until the caller stops; a gap frame first when the source no longer
        holds (or never held) that range."""
        raise NotImplementedError

    def ring_after(self, after: int, max_bytes: int | None = None) -> list[Frame] | None:
        """The events after ``after`` if the ring covers that range (else None), oldest first:
        all of them up to ``head``, or, with ``max_bytes``, the oldest ones up to about that
        many bytes (at least one)."""
        if self.ring_base is None or self.head is None or not self.ring_base <= after <= self.head:
            return None
        newer: list[Frame] = []
        for frame in reversed(self.ring):
            if frame.seq is None or frame.seq <= after:
                break
            newer.append(frame)
        newer.reverse()
        if max_bytes is None:
            return newer
        size = 0
        for count, frame in enumerate(newer, 1):
            size += frame.size
            if size >= max_bytes:
                return newer[:count]
        return newer

    def set_head(self, head: int) -> None:
        """Start (or restart, after a gap) at ``head``: the ring is emptied."""
        self.head = head
        self.positioned.set()
        self.ring.clear()
        self.ring_held = 0
        self.ring_base = head

    def receive(self, frame: Frame) -> bool:
        """Take a frame from the source: keep it and hand it to every subscriber. False for an
        event at or before ``head`` (never hand a position out twice)."""
        if frame.gap is not None:
            _log.warning("upstream %s: the source signals a gap: %s", self.label, frame.gap)
            self.set_head(frame.gap.resumed_after)
        else:
            assert frame.seq is not None
            if self.head is not None and frame.seq <= self.head:
                return False
            self.head = frame.seq
            self._keep(frame)
        for subscriber in list(self.subscribers):
            subscriber.offer(frame)
        return True

    def _keep(self, frame: Frame) -> None:
        """Add ``frame`` to the ring, evicting the oldest events until both bounds hold."""
        self.ring.append(frame)
        self.ring_held += frame.size
        while self.ring and (len(self.ring) > self.ring_size or self.ring_held > self.ring_bytes):
            evicted = self.ring.popleft()
            self.ring_held -= evicted.size
            self.ring_base = evicted.seq
