"""One client's SSE stream through the gateway: replay, hand-over to the live stream, overflow.

A client stream reads one or more upstreams (one for ``/streams/{beat}[/{channel}]``, one per
permitted beat for ``/streams``). For each it has a :class:`Subscription` with a position
``last`` in the beat's sequence.

Replay and hand-over (no gap, no duplicate), per subscription:

1. The subscription is registered with the shared upstream *first*. While it is catching up
   it *holds* the live events it is offered; ``floor`` is a position such that the held
   events are every event of the stream after ``floor``.
2. The events between the client's ``Last-Event-ID`` and ``floor`` come from the upstream's
   ring when it still covers them, else from a dedicated, short-lived read from the beat with
   that ``Last-Event-ID`` (the beat replays from its log, and signals ``beats.gap`` itself if
   retention dropped part of the range), or, in Kafka mode, from the partition
   (:meth:`gateway.kafka.KafkaReader.replay`). The read stops at the first event past
   ``floor``.
3. Then, with no await in between, the held events are moved to the client's queue and the
   subscription goes live. Every event is sent only if its sequence is past ``last``.

If the held events overflow while a long replay runs, they are dropped and ``floor`` moves up
to the newest of them: the replay simply goes further (it is a complete stream of its own).
A client ahead of the upstream (it came from the beat, or the beat's log was reset) is
checked with the beat, which answers with events or with a gap signal.

Overflow: once live, a client has a queue bounded in events (``--client-queue-size``) and in
bytes (``--client-queue-bytes``, :attr:`Frame.size`; one larger event is still taken by an
empty queue). Publishing never waits; a client whose queue would pass either bound is
disconnected with a ``retry:`` hint (logged and counted) and resumes with its
``Last-Event-ID``, as on a beat. A client whose replay read fails (the beat is down) is ended
the same way. The held events of a catching-up subscription have the same bounds.

Memory: replays never overflow, they wait while the client's queue is half full (in events or
bytes); the ring is read a page of about ``CHUNK_BYTES`` at a time, so a replaying client
keeps no snapshot of the ring. Each chunk handed to the server holds at most ``CHUNK_BYTES``
(one larger event goes alone): a stalled client holds its queue, one chunk and the
connection's buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable

import httpx
from httpx_sse import SSEError

from gateway.auth import Principal, tlp_allows
from gateway.filters import Filter, matches
from gateway.frames import Frame
from gateway.metrics import GatewayMetrics
from gateway.ring import RingStream
from gateway.upstream import BeatError, StreamKey

__all__ = ["CHUNK_BYTES", "ClientStream", "Subscription"]

CHUNK_BYTES = 1 << 20

_log = logging.getLogger(__name__)
_RETRY = b"retry: 2000\n\n"
_OVERFLOW = b": overflow, reconnect with Last-Event-ID to resume\nretry: 500\n\n"
_FAILED = b": the beat is unreachable, reconnect with Last-Event-ID to resume\nretry: 2000\n\n"


class Subscription:
    """One client's view of one upstream (see the module docstring)."""

    def __init__(self, client: ClientStream, label: str, upstream: RingStream) -> None:
        self.client = client
        self.label = label
        self.upstream = upstream
        self.last: int | None = None
        self.live = True
        self.floor: int | None = None
        self.held: deque[Frame] = deque()
        self.held_bytes = 0
        self.task: asyncio.Task[None] | None = None

    def start(self, resume: int | None) -> None:
        """Register with the upstream and start at ``resume`` (None: live from now)."""
        upstream = self.upstream
        upstream.subscribe(self)
        if resume is None or resume == upstream.head:
            self.last = upstream.head
            return
        self.last = resume
        self.live = False
        self.floor = upstream.head
        self.task = asyncio.create_task(
            self._catch_up(resume), name=f"gateway:catch-up:{self.label}"
        )

    def offer(self, frame: Frame) -> None:
        """Called by the upstream for each frame it receives; never waits."""
        if self.live:
            self.client.push(self, frame)
            return
        if frame.seq is not None and self.floor is None:
            self.floor = frame.seq - 1
        if self.client.is_full(len(self.held), self.held_bytes, frame) and frame.seq is not None:
            self.held.clear()
            self.held_bytes = 0
            self.floor = frame.seq
            return
        self.held.append(frame)
        self.held_bytes += frame.size

    async def _catch_up(self, cursor: int) -> None:
        try:
            if self.floor is None or cursor > self.floor:
                # ahead of the upstream (or it has no position yet): the beat knows better
                self.client.metrics.replays.labels("beat").inc()
                cursor = await self._read_beat(cursor)
            while True:
                cursor = await self._replay_to_floor(cursor)
                await self.client.drained()
                if self.floor is not None and cursor >= self.floor:
                    self._go_live()
                    return
        except (httpx.HTTPError, SSEError, BeatError, ValueError) as exc:
            _log.info("client replay of %s from the beat failed: %s", self.label, exc)
            self.client.fail()

    async def _replay_to_floor(self, cursor: int) -> int:
        """Send what lies between ``cursor`` and ``floor``, from the ring or from the beat."""
        from_ring = False
        while self.floor is None or cursor < self.floor:
            head = self.upstream.head
            frames = self.upstream.ring_after(cursor, CHUNK_BYTES)
            if frames is not None and head is not None:
                if not from_ring:
                    self.client.metrics.replays.labels("ring").inc()
                    from_ring = True
                await self.client.push_replay(self, frames)
                last = frames[-1].seq if frames else head
                cursor = max(cursor, last or cursor)
            else:
                from_ring = False
                self.client.metrics.replays.labels("beat").inc()
                cursor = await self._read_beat(cursor)
        return cursor

    async def _read_beat(self, cursor: int) -> int:
        """Replay from the beat after ``cursor`` until the held events take over. A beat that
        ends the stream after some progress (this slow read overflowed its buffer there) is
        read again from where it stopped, as any client resumes; one that ends it with none
        fails the client."""
        start = cursor
        async with self.upstream.replay(cursor) as frames:
            async for frame in frames:
                if not frame.type and self.floor is None and self.upstream.head is not None:
                    # a replay caught up (a marker) and nothing was offered yet: every event
                    # after the upstream's head will be, so the held events start there
                    self.floor = self.upstream.head
                if frame.gap is not None:
                    cursor = frame.gap.resumed_after
                elif self.floor is not None and frame.seq is not None and frame.seq > self.floor:
                    return max(cursor, self.floor)
                else:
                    cursor = frame.seq or cursor
                await self.client.push_replay(self, [frame])
                if self.floor is not None and cursor >= self.floor:
                    return cursor
        if cursor == start:
            raise BeatError(f"{self.label}: the source ended the replay")
        _log.info("client replay of %s: the beat ended it at %d; resuming", self.label, cursor)
        return cursor

    def _go_live(self) -> None:
        held, self.held = self.held, deque()
        self.held_bytes = 0
        self.live = True
        self.client.push_many(self, held)

    def stop(self) -> None:
        self.upstream.unsubscribe(self)
        if self.task is not None:
            self.task.cancel()


class ClientStream:
    """The frames one client receives (see the module docstring). ``merged``: the ``id:`` of
    each message is the position vector ``label=seq;label=seq`` of every subscription, made
    opaque by ``encode_id`` if given (Kafka mode). ``scope``: the streams the client asked for
    (Kafka mode adds their new partitions to it); ``named``: the positions its id named."""

    def __init__(
        self,
        *,
        metrics: GatewayMetrics,
        queue_size: int,
        queue_bytes: int,
        merged: bool,
        filter: Filter | None,
        principal: Principal,
        on_close: Callable[[ClientStream], None],
        scope: list[StreamKey] | None = None,
        encode_id: Callable[[list[tuple[str, int]]], str] | None = None,
        named: dict[str, int] | None = None,
    ) -> None:
        self.metrics = metrics
        self.scope = scope or []
        self.named = named or {}
        """The positions the client's id named (Kafka mode: partitions may be found later)."""
        self._encode_id = encode_id
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.merged = merged
        self.filter = filter
        self.principal = principal
        self.tlp_max = principal.tlp_max
        self.subscriptions: list[Subscription] = []
        self.out: deque[tuple[Subscription, Frame]] = deque()
        self.out_bytes = 0
        self.overflowed = False
        self.failed = False
        self.closed = False
        self._wakeup = asyncio.Event()
        self._space = asyncio.Event()
        self._on_close = on_close
        self._released = False

    def open(self, upstreams: Iterable[tuple[str, RingStream, int | None]]) -> None:
        """Subscribe to each (label, upstream, resume position)."""
        for label, upstream, resume in upstreams:
            self.add(label, upstream, resume)

    def add(self, label: str, upstream: RingStream, resume: int | None) -> None:
        subscription = Subscription(self, label, upstream)
        self.subscriptions.append(subscription)
        subscription.start(resume)

    async def positioned(self, timeout: float) -> None:
        """Wait, at most ``timeout`` seconds, until the upstream of every live subscription
        knows its position. A live client (no ``Last-Event-ID``) gets every event after its
        upstreams' positions: answering once they are known means it gets every event
        committed after its response started. An upstream that cannot tell (its beat or Kafka
        is down) or not in time holds the answer no longer; it then starts where it can."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                for subscription in self.subscriptions:
                    if subscription.live and subscription.last is None:
                        await subscription.upstream.positioned.wait()

    # -- filling the queue (upstreams and replays) -----------------------------------------------

    def is_full(self, count: int, size: int, frame: Frame) -> bool:
        """Whether a queue of ``count`` frames and ``size`` bytes cannot take ``frame``."""
        return count >= self.queue_size or (count > 0 and size + frame.size > self.queue_bytes)

    def push(self, subscription: Subscription, frame: Frame) -> None:
        if self.overflowed or self.closed:
            return
        if self.is_full(len(self.out), self.out_bytes, frame):
            _log.info(
                "gateway: a client of %s overflowed its queue (%d events, %d bytes); "
                "disconnected, it resumes with Last-Event-ID",
                subscription.label, len(self.out), self.out_bytes,
            )  # fmt: skip
            self.overflowed = True
            self.out.clear()
            self.out_bytes = 0
            self.metrics.overflow.inc()
        else:
            self.out.append((subscription, frame))
            self.out_bytes += frame.size
        self._wakeup.set()

    def push_many(self, subscription: Subscription, frames: Iterable[Frame]) -> None:
        for frame in frames:
            self.out.append((subscription, frame))
            self.out_bytes += frame.size
        self._wakeup.set()

    async def push_replay(self, subscription: Subscription, frames: list[Frame]) -> None:
        """Queue replayed frames, waiting while the client's queue is half full (in events or
        bytes): replays never overflow."""
        step, step_bytes = max(1, self.queue_size // 2), max(1, self.queue_bytes // 2)
        for frame in frames:
            while (len(self.out) >= step or self.out_bytes >= step_bytes) and not self.closed:
                self._space.clear()
                await self._space.wait()
            self.push_many(subscription, (frame,))

    async def drained(self) -> None:
        """Return once the client took everything queued (or the stream ended)."""
        while self.out and not self.closed:
            self._space.clear()
            await self._space.wait()

    def fail(self) -> None:
        self.failed = True
        self._wakeup.set()

    def close(self) -> None:
        """End the stream (shutdown); the client resumes elsewhere with ``Last-Event-ID``."""
        self.closed = True
        self._wakeup.set()
        self._space.set()

    # -- the client's side -------------------------------------------------------------------------

    async def frames(self) -> AsyncIterator[bytes]:
        """The SSE bytes for the client; releases everything when it ends."""
        try:
            yield _RETRY
            while not (self.closed or self.overflowed or self.failed):
                if not self.out:
                    await self._wakeup.wait()
                    self._wakeup.clear()
                chunk = self._drain(CHUNK_BYTES)
                self._space.set()
                if chunk:
                    yield chunk
                del chunk
            if self.overflowed:
                yield _OVERFLOW
            elif self.failed:
                yield _FAILED
        finally:
            self.release()

    def _drain(self, limit: int) -> bytes:
        """The next chunk for the client: the oldest queued frames, up to ``limit`` bytes of
        them (at least one)."""
        if self.overflowed:
            return b""
        parts: list[bytes] = []
        size = 0
        while self.out and size < limit:
            subscription, frame = self.out.popleft()
            self.out_bytes -= frame.size
            part = self._render(subscription, frame)
            if part is not None:
                parts.append(part)
                size += len(part)
        return b"".join(parts)

    def _render(self, subscription: Subscription, frame: Frame) -> bytes | None:
        if frame.gap is not None:
            subscription.last = frame.gap.resumed_after
            self.metrics.gaps.inc()
            return frame.wire()
        assert frame.seq is not None
        if subscription.last is not None and frame.seq <= subscription.last:
            return None
        subscription.last = frame.seq
        if not frame.type or not self._visible(subscription, frame):
            return None
        return frame.wire_with_id(self.position()) if self.merged else frame.wire()

    def _visible(self, subscription: Subscription, frame: Frame) -> bool:
        """The TLP ceiling first, then the filter: a filter never sees an event the token may
        not read, so what a filter matches (and the time it takes) says nothing about hidden
        events. Every path of an event to a client (live, held, ring and beat replays) comes
        through here."""
        if self.tlp_max is not None and not self._within_ceiling(subscription, frame):
            self.metrics.filtered.labels("tlp").inc()
            return False
        if self.filter is not None:
            try:
                visible = matches(self.filter, frame.event())
            except ValueError:
                visible = False
            if not visible:
                self.metrics.filtered.labels("filter").inc()
                return False
        return True

    def _within_ceiling(self, subscription: Subscription, frame: Frame) -> bool:
        """An event with ``tlp`` is compared with the ceiling; an OpenCTI event without one
        counts as red (a beat that predates ``tlp`` on every event, or a forged frame); a
        dead letter of a beat the token holds ``<beat>:deadletter`` of is shown whatever its
        TLP. Events of other beats carry no TLP and are not restricted."""
        try:
            event = frame.event()
        except ValueError:
            return False
        tlp = event.get("tlp")
        if tlp is None and event.get("beat") == "opencti":
            tlp = "red"
        is_dead_letter = str(event.get("type", "")).endswith(".deadletter")
        if is_dead_letter and self.principal.sees_dead_letters(subscription.upstream.beat):
            return True
        return tlp is None or tlp_allows(self.tlp_max, tlp)

    def position(self) -> str:
        """The merged stream's id: ``label=seq`` of every subscription with a position."""
        pairs = [(s.label, s.last) for s in self.subscriptions if s.last is not None]
        if self._encode_id is not None:
            return self._encode_id(pairs)
        return ";".join(f"{label}={last}" for label, last in pairs)

    def release(self) -> None:
        """Unsubscribe and give the stream slot back (idempotent)."""
        if self._released:
            return
        self._released = True
        self.closed = True
        for subscription in self.subscriptions:
            subscription.stop()
        with contextlib.suppress(Exception):
            self._on_close(self)
