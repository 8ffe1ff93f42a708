"""The SSE response of every service: sse-starlette's, with a stalled client dropped cleanly.

A client that stops reading fills its socket buffers; once a write has waited
``send_timeout`` seconds, sse-starlette gives up with ``SendTimeoutError``. Left alone, that
error reaches uvicorn as "Exception in ASGI application" with a traceback, the background
task (the gateway's client release) is skipped, and the connection is only ``close()``d, which
waits for ever to flush to a client that does not read. Here it is one warning and one count;
the connection is aborted (through :class:`common.http.DeadlineProtocol`'s ``ABORT``
extension when the server provides it) and the background task still runs. The client
reconnects with its ``Last-Event-ID`` and loses nothing.

The timeout costs no timer per write: sse-starlette arms a cancel scope around every ``send``
(about 5 µs, a quarter of a core for a gateway writing 50,000 frames a second). Here a write
only notes when it started, and one timer per event loop (:class:`_SendWatch`), running only
while some write is waiting, cancels a write that has waited ``send_timeout``: it surfaces as
the same ``SendTimeoutError``, at most a quarter of a second late.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any

from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.types import Message, Receive, Scope, Send

__all__ = ["ABORT", "SseResponse"]

ABORT = "works_beats.abort"
"""Scope extension: a callable that aborts the connection and marks the request disconnected."""

log = logging.getLogger("beats.sse")


class SseResponse(EventSourceResponse):
    def __init__(self, *args: Any, on_send_timeout: Callable[[], object], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_send_timeout = on_send_timeout
        self._watch: _SendWatch | None = None
        self._waiting: dict[asyncio.Task[Any], float] = {}  # the stream's and the ping's
        self._timed_out = False

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        """``send``, cancelled by the loop's :class:`_SendWatch` once it has waited
        ``send_timeout`` (then ``SendTimeoutError``, as sse-starlette raises it)."""
        if self.send_timeout is None:
            await send(message)
            return
        task = asyncio.current_task()
        assert task is not None
        watch = self._watch or _SendWatch.of(task.get_loop())
        self._watch = watch
        self._waiting[task] = watch.loop.time()
        watch.waiting.add(self)
        watch.arm()
        try:
            await send(message)
        except asyncio.CancelledError:
            if not self._timed_out:
                raise
            task.uncancel()
            raise SendTimeoutError() from None
        finally:
            del self._waiting[task]
            if not self._waiting:
                watch.waiting.discard(self)

    def _expire(self, now: float) -> None:
        if self.send_timeout is None or self._timed_out:
            return
        for task, started in self._waiting.items():
            if now - started >= self.send_timeout:
                self._timed_out = True
                task.cancel()
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            self._on_send_timeout()
            client = scope.get("client") or ("?", 0)
            log.warning(
                "SSE client %s:%s did not take a write for %s s: disconnected (it resumes "
                "with its Last-Event-ID)",
                *client,
                self.send_timeout,
            )
            abort = scope.get("extensions", {}).get(ABORT)
            if abort is not None:
                abort()
                await asyncio.sleep(0)  # let the transport report the connection lost
            if self.background is not None:
                await self.background()


class _SendWatch:
    """The writes of one event loop's SSE responses that are waiting (a write to a client that
    reads along completes without waiting), checked by one timer while there are any."""

    _loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _SendWatch] = (
        weakref.WeakKeyDictionary()
    )
    period = 0.25

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: set[SseResponse] = set()
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _SendWatch:
        watch = cls._loops.get(loop)
        if watch is None:
            watch = cls._loops[loop] = cls(loop)
        return watch

    def arm(self) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(self.period, self._check)

    def _check(self) -> None:
        self._timer = None
        now = self.loop.time()
        for response in list(self.waiting):
            response._expire(now)
        if self.waiting:
            self.arm()
