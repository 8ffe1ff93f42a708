"""One shared SSE connection per (beat, channel) that has clients, and a ring of its events.

An :class:`Upstream` is opened lazily by the first client of its stream and closed
``--upstream-linger`` seconds after the last one left. It learns the beat's log head from
``/readyz`` before its first connection and from then on always connects with
``Last-Event-ID`` = the last sequence it received, so a dropped connection or a restarted
beat is resumed from the beat's log with no gap and no duplicate. Reconnects use jittered
exponential backoff (:class:`common.supervise.Backoff`).

A ``beats.gap`` from the beat (its log was reset, or it no longer holds what the gateway asked
for) clears the ring (:mod:`gateway.ring`) and is passed on to the clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Hashable
from typing import cast
from urllib.parse import quote

import httpx
from httpx_sse import SSEError, aconnect_sse

from common.metrics import Metrics
from common.supervise import Backoff, supervise
from gateway.frames import Frame
from gateway.metrics import GatewayMetrics
from gateway.ring import RingStream

__all__ = ["BeatError", "StreamKey", "Upstream", "UpstreamPool", "open_beat_stream", "stream_label"]

_log = logging.getLogger(__name__)

StreamKey = tuple[str, str | None]
"""(beat, channel); channel ``None`` is the beat's ``/events`` (every channel)."""


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


class Upstream(RingStream):
    """One beat's SSE stream (``/events`` or ``/events/{channel}``); positions are its sequences."""

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
        super().__init__(key, beat=key[0], ring_size=ring_size, ring_bytes=ring_bytes)
        self.channel = key[1]
        self.label = stream_label(key)
        self.base_url = base_url
        suffix = "" if self.channel is None else "/" + quote(self.channel, safe="")
        self.url = f"{base_url}/events{suffix}"
        self._http = http
        self._metrics = metrics

    def replay(self, after: int) -> contextlib.AbstractAsyncContextManager[AsyncIterator[Frame]]:
        return open_beat_stream(self._http, self.url, after)

    async def run(self) -> None:
        """Read the beat forever: reconnect with ``Last-Event-ID`` and backoff after any drop."""
        backoff = Backoff(min_delay=0.1, max_delay=5.0)
        while True:
            try:
                if self.head is None:
                    self.set_head(await self._fetch_head())
                async with open_beat_stream(self._http, self.url, self.head) as frames:
                    self.connected = True
                    self._metrics.upstream_connected.inc()
                    backoff.reset()
                    async for frame in frames:
                        if self.receive(frame) and frame.seq is not None:
                            self._metrics.upstream_events.labels(self.beat).inc()
                _log.info("upstream %s: the beat ended the stream; resuming", self.label)
            except (httpx.HTTPError, SSEError, BeatError, ValueError, KeyError) as exc:
                _log.info("upstream %s: %s; resuming after %s", self.label, exc, self.head)
                self.positioned.set()  # live clients wait no longer for a beat that is down
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


class UpstreamPool:
    """The open upstreams, by key: shared, reference-counted, closed after linger.
    ``factory`` makes the upstream of a key (a beat's stream or a Kafka partition); its
    ``run`` is a supervised task of the pool, cancelled when the upstream closes."""

    def __init__(
        self,
        factory: Callable[[Hashable], RingStream],
        *,
        linger: float,
        metrics: GatewayMetrics,
    ) -> None:
        self.linger = linger
        self._factory = factory
        self._metrics = metrics
        self._open: dict[Hashable, tuple[RingStream, asyncio.Task[None]]] = {}
        self._closers: dict[Hashable, asyncio.TimerHandle] = {}
        self._tasks: asyncio.TaskGroup | None = None

    def start(self, tasks: asyncio.TaskGroup) -> None:
        self._tasks = tasks

    def get(self, key: Hashable) -> RingStream | None:
        entry = self._open.get(key)
        return None if entry is None else entry[0]

    @property
    def count(self) -> int:
        """Open upstreams (lingering ones included)."""
        return len(self._open)

    def all(self) -> list[RingStream]:
        return [upstream for upstream, _ in self._open.values()]

    def acquire(self, key: Hashable) -> RingStream:
        """The shared upstream of ``key`` (opened now if needed); pair with :meth:`release`."""
        if self._tasks is None:
            raise RuntimeError("the upstream pool is not started")
        closer = self._closers.pop(key, None)
        if closer is not None:
            closer.cancel()
        entry = self._open.get(key)
        if entry is None:
            upstream = self._factory(key)
            restarts = cast(Metrics, self._metrics)  # supervise() only counts .restarts
            task = self._tasks.create_task(
                supervise(f"upstream:{upstream.label}", upstream.run, metrics=restarts),
                name=f"gateway:upstream:{upstream.label}",
            )
            entry = self._open[key] = (upstream, task)
            self._metrics.upstreams.set(len(self._open))
            _log.info("upstream %s: opened", upstream.label)
        entry[0].refs += 1
        return entry[0]

    def release(self, upstream: RingStream) -> None:
        upstream.refs -= 1
        if upstream.refs > 0 or upstream.key in self._closers:
            return
        loop = asyncio.get_running_loop()
        self._closers[upstream.key] = loop.call_later(self.linger, self._close, upstream.key)

    def _close(self, key: Hashable) -> None:
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
