"""The SSE response of every service: sse-starlette's, with a stalled client dropped cleanly.

A client that stops reading fills its socket buffers; once a write has waited
``send_timeout`` seconds, sse-starlette gives up with ``SendTimeoutError``. Left alone, that
error reaches uvicorn as "Exception in ASGI application" with a traceback, the background
task (the gateway's client release) is skipped, and the connection is only ``close()``d, which
waits for ever to flush to a client that does not read. Here it is one warning and one count;
the connection is aborted (through :class:`common.http.DeadlineProtocol`'s ``ABORT``
extension when the server provides it) and the background task still runs. The client
reconnects with its ``Last-Event-ID`` and loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

__all__ = ["ABORT", "SseResponse"]

ABORT = "works_beats.abort"
"""Scope extension: a callable that aborts the connection and marks the request disconnected."""

log = logging.getLogger("beats.sse")


class SseResponse(EventSourceResponse):
    def __init__(self, *args: Any, on_send_timeout: Callable[[], object], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_send_timeout = on_send_timeout

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
