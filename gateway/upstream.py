"""One shared SSE connection per (beat, channel) that has clients, and a ring of its events.

An :class:`Upstream` is opened lazily by the first client of its stream and closed
``--upstream-linger`` seconds after the last one left. It learns the beat's log head from
``/readyz`` before its first connection and from then on always connects with
``Last-Event-ID`` = the last sequence it received, so a dropped connection or a restarted
beat is resumed from the beat's log with no gap and no duplicate. Reconnects use jittered
exponential backoff (:class:`common.supervise.Backoff`).

The ring keeps the most recent events: it holds *every* event of the stream with a sequence
in ``(ring_base, head]``, which is what lets a client's replay be served from memory (see
:mod:`gateway.clients`). It is bounded by ``--ring-size`` events and ``--ring-bytes``
(:attr:`Frame.size`): the oldest events are evicted, and ``ring_base`` moves up to the last one
evicted, until both bounds hold (an event larger than ``--ring-bytes`` alone is not kept).
A ``beats.gap`` from the beat (its log was reset, or it no longer holds what the gateway asked
for) clears the ring and is passed on to the clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol, cast
from urllib.parse import quote

import httpx
from httpx_sse import SSEError, aconnect_sse

from common.metrics import Metrics
from common.supervise import Backoff, supervise
from gateway.frames import Frame
from gateway.metrics import GatewayMetrics

__all__ = ["BeatError", "StreamKey", "Subscriber", "Upstream", "UpstreamPool", "open_beat_stream"]

_log = logging.getLogger(__name__)

StreamKey = tuple[str, str | None]
"""(beat, channel); channel ``None`` is the beat's ``/events`` (every channel)."""


class Subscriber(Protocol):
    def offer(self, frame: Frame) -> None: ...


class BeatError(Exception):
    """A beat answered with something other than an event stream."""


def stream_label(key: StreamKey) -> str:
    beat, channel = key
    return beat if channel is None else f"{beat}/{channel}"


@contextlib.asynccontextmanager
async def open_beat_stream(
    http: httpx.AsyncClient, url: str, last_event_id: int | None
) -> AsyncIterator[AsyncIterator[Frame]]:
    """Connect to a beat's SSE ``url`` (resuming after ``last_event_id``); yields its frames."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    async with aconnect_sse(http, "GET", url, headers=headers) as source:
        if source.response.status_code != 200:
            await source.response.aread()
            raise BeatError(f"{url}: HTTP {source.response.status_code}")

        async def frames() -> AsyncIterator[Frame]:
            async for sse in source.aiter_sse():
                frame = Frame.from_sse(sse)
                if frame is not None:
                    yield frame

        yield frames()


class Upstream:
    def __init__(
        self,
        key: StreamKey,
        base_url: str,
        *,
        http: httpx.AsyncClient,
        ring_size: int,
        ring_bytes: int,
        metrics: GatewayMetrics,
    ) -> None:
        self.key = key
        self.beat, self.channel = key
        self.label = stream_label(key)
        self.base_url = base_url
        suffix = "" if self.channel is None else "/" + quote(self.channel, safe="")
        self.url = f"{base_url}/events{suffix}"
        self.head: int | None = None
        self.ring: deque[Frame] = deque()
        self.ring_base: int | None = None
        self.ring_size = ring_size
        self.ring_bytes = ring_bytes
        self.ring_held = 0
        """Bytes of the frames in the ring (:attr:`Frame.size`)."""
        self.connected = False
        self.refs = 0
        self.subscribers: set[Subscriber] = set()
        self.head_known = asyncio.Event()
        self._http = http
        self._metrics = metrics

    # -- clients -----------------------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

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

    # -- the connection ------------------------------------------------------------------------

    async def run(self) -> None:
        """Read the beat forever: reconnect with ``Last-Event-ID`` and backoff after any drop."""
        backoff = Backoff(min_delay=0.1, max_delay=5.0)
        while True:
            try:
                if self.head is None:
                    self._set_head(await self._fetch_head())
                async with open_beat_stream(self._http, self.url, self.head) as frames:
                    self.connected = True
                    self._metrics.upstream_connected.inc()
                    backoff.reset()
                    async for frame in frames:
                        self._receive(frame)
                _log.info("upstream %s: the beat ended the stream; resuming", self.label)
            except (httpx.HTTPError, SSEError, BeatError, ValueError, KeyError) as exc:
                _log.info("upstream %s: %s; resuming after %s", self.label, exc, self.head)
            finally:
                if self.connected:
                    self.connected = False
                    self._metrics.upstream_connected.dec()
            self._metrics.upstream_reconnects.labels(self.beat).inc()
            await asyncio.sleep(backoff.next())

    async def _fetch_head(self) -> int:
        """The beat's newest sequence: live clients start after it (from its ``/readyz``)."""
        response = await self._http.get(f"{self.base_url}/readyz")
        if response.status_code not in (200, 503):
            raise BeatError(f"{self.base_url}/readyz: HTTP {response.status_code}")
        return int(response.json()["log"]["head"])

    def _set_head(self, head: int) -> None:
        self.head = head
        self.ring.clear()
        self.ring_held = 0
        self.ring_base = head
        self.head_known.set()

    def _receive(self, frame: Frame) -> None:
        if frame.gap is not None:
            _log.warning("upstream %s: the beat signals a gap: %s", self.label, frame.gap)
            self._set_head(frame.gap.resumed_after)
        else:
            assert frame.seq is not None
            if self.head is not None and frame.seq <= self.head:
                return  # defensive: never hand a sequence out twice
            self.head = frame.seq
            self._metrics.upstream_events.labels(self.beat).inc()
            self._keep(frame)
        for subscriber in list(self.subscribers):
            subscriber.offer(frame)

    def _keep(self, frame: Frame) -> None:
        """Add ``frame`` to the ring, evicting the oldest events until both bounds hold."""
        self.ring.append(frame)
        self.ring_held += frame.size
        while self.ring and (len(self.ring) > self.ring_size or self.ring_held > self.ring_bytes):
            evicted = self.ring.popleft()
            self.ring_held -= evicted.size
            self.ring_base = evicted.seq


class UpstreamPool:
    """The open upstreams, by (beat, channel): shared, reference-counted, closed after linger."""

    def __init__(
        self,
        beats: dict[str, str],
        *,
        http: httpx.AsyncClient,
        ring_size: int,
        ring_bytes: int,
        linger: float,
        metrics: GatewayMetrics,
    ) -> None:
        self.beats = beats
        self.linger = linger
        self._http = http
        self._ring_size = ring_size
        self._ring_bytes = ring_bytes
        self._metrics = metrics
        self._open: dict[StreamKey, tuple[Upstream, asyncio.Task[None]]] = {}
        self._closers: dict[StreamKey, asyncio.TimerHandle] = {}
        self._tasks: asyncio.TaskGroup | None = None

    def start(self, tasks: asyncio.TaskGroup) -> None:
        self._tasks = tasks

    def get(self, key: StreamKey) -> Upstream | None:
        entry = self._open.get(key)
        return None if entry is None else entry[0]

    @property
    def count(self) -> int:
        """Open upstreams (lingering ones included)."""
        return len(self._open)

    def all(self) -> list[Upstream]:
        return [upstream for upstream, _ in self._open.values()]

    def acquire(self, key: StreamKey) -> Upstream:
        """The shared upstream of ``key`` (opened now if needed); pair with :meth:`release`."""
        if self._tasks is None:
            raise RuntimeError("the upstream pool is not started")
        closer = self._closers.pop(key, None)
        if closer is not None:
            closer.cancel()
        entry = self._open.get(key)
        if entry is None:
            upstream = Upstream(
                key, self.beats[key[0]], http=self._http, ring_size=self._ring_size,
                ring_bytes=self._ring_bytes, metrics=self._metrics,
            )  # fmt: skip
            restarts = cast(Metrics, self._metrics)  # supervise() only counts .restarts
            task = self._tasks.create_task(
                supervise(f"upstream:{upstream.label}", upstream.run, metrics=restarts),
                name=f"gateway:upstream:{upstream.label}",
            )
            entry = self._open[key] = (upstream, task)
            self._metrics.upstreams.set(len(self._open))
            _log.info("upstream %s: opened (%s)", upstream.label, upstream.url)
        entry[0].refs += 1
        return entry[0]

    def release(self, upstream: Upstream) -> None:
        upstream.refs -= 1
        if upstream.refs > 0 or upstream.key in self._closers:
            return
        loop = asyncio.get_running_loop()
        self._closers[upstream.key] = loop.call_later(self.linger, self._close, upstream.key)

    def _close(self, key: StreamKey) -> None:
        self._closers.pop(key, None)
        entry = self._open.get(key)
        if entry is None or entry[0].refs > 0:
            return
        del self._open[key]
        entry[1].cancel()
        self._metrics.upstreams.set(len(self._open))
        _log.info("upstream %s: closed (no clients)", entry[0].label)

    def close_all(self) -> None:
        for closer in self._closers.values():
            closer.cancel()
        self._closers.clear()
        for _, task in self._open.values():
            task.cancel()
        self._open.clear()
        self._metrics.upstreams.set(0)
