"""The HTTP server of every service: uvicorn, with a deadline on each request head.

uvicorn times out idle keep-alive connections but not a request head that never completes: a
client that connects and sends nothing, or trickles its headers a byte at a time (slowloris),
holds a connection for ever. :func:`server_config` uses h11 with a deadline: a connection must
deliver each complete request head within ``head_timeout`` seconds of its first byte (the first
one: of connecting), else it is closed, logged and counted. A response being streamed (SSE) is
not affected: the deadline covers only the head.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from common.settings import ServiceSettings

__all__ = ["HeadDeadlineProtocol", "server_config"]

_log = logging.getLogger(__name__)


class HeadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request head is late (see the module
    docstring). Subclasses set ``head_timeout`` and ``on_timeout`` (:func:`server_config`)."""

    head_timeout: float = 10.0
    on_timeout: Callable[[], None] = staticmethod(lambda: None)
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_timeout, self._expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _expired(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            peer = "{}:{}".format(*self.client) if self.client else "?"
            _log.warning("closing %s: no complete request head in %.1fs", peer, self.head_timeout)
            self.on_timeout()
            self.transport.close()


def server_config(
    app: Any, settings: ServiceSettings, *, on_head_timeout: Callable[[], None], **options: Any
) -> uvicorn.Config:
    """The uvicorn configuration of a service: its host and port, no lifespan (the service runs
    its own tasks), quiet logs, graceful shutdown bounded by half of ``shutdown_timeout``."""
    protocol = type(
        "HeadDeadline",
        (HeadDeadlineProtocol,),
        {"head_timeout": settings.http_head_timeout, "on_timeout": staticmethod(on_head_timeout)},
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=max(1, int(settings.shutdown_timeout / 2)),
        **options,
    )
