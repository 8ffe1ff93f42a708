"""The HTTP server of every service: uvicorn with deadlines on each request's head and body.

uvicorn times out idle keep-alive connections but not a request that never completes: a client
that connects and sends nothing, trickles its headers a byte at a time (slowloris) or its body
(slow POST) holds a connection for ever. :class:`DeadlineProtocol` (h11) closes, logs and
counts them:

* the **head** must be complete within ``head_timeout`` seconds of its first byte (the first
  request's: of connecting);
* the **body** must be complete within ``body_timeout`` seconds of the head: later, the client
  gets 408 (if no response has started) and the connection is closed, counted as
  ``body_timeout``;
* when the application answered before reading the whole body (413, 401...), the rest is read
  and dropped, never buffered, up to ``discard_limit`` bytes; beyond, the connection is closed;
* at shutdown, a response still going halfway through uvicorn's graceful period (an SSE client
  that stopped reading) is closed, so shutdown never waits on a client.

A response being streamed (SSE) is not affected: the deadlines cover only what the client sends.
Sizes are bounded by :mod:`common.bodies`. The listening socket is bound beforehand
(:func:`common.lifecycle.listen`) and handed to :func:`serve_http`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, cast

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from common.bodies import DISCARD_BYTES, LOGGED, limit_bodies
from common.lifecycle import listen
from common.settings import ServiceSettings
from common.sse_response import ABORT

__all__ = [
    "EMULATOR_LIMITS",
    "DeadlineProtocol",
    "HttpLimits",
    "UvicornServer",
    "serve_emulator",
    "serve_http",
    "server_config",
]

_log = logging.getLogger(__name__)


def _nothing(*args: Any) -> None:
    pass


@dataclass(frozen=True, kw_only=True)
class HttpLimits:
    head_timeout: float = 10.0
    body_timeout: float = 30.0
    max_body_bytes: int = 1024 * 1024

    @classmethod
    def of(cls, settings: ServiceSettings) -> HttpLimits:
        return cls(
            head_timeout=settings.http_head_timeout,
            body_timeout=settings.http_body_timeout,
            max_body_bytes=settings.http_max_body_bytes,
        )


EMULATOR_LIMITS = HttpLimits(max_body_bytes=16 * 1024 * 1024)
"""The emulators' request limits (they are test and demo tools: fixed, generous)."""


class DeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with the deadlines of the module docstring. Subclasses set the
    class attributes (:func:`server_config`)."""

    head_timeout: float = 10.0
    body_timeout: float = 30.0
    discard_limit: int = 1024 * 1024
    on_head_timeout: Callable[[], None] = staticmethod(_nothing)
    on_rejected: Callable[[str], None] = staticmethod(_nothing)
    _head_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _discarded: int = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head()

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and self.conn.their_state is h11.IDLE:
            self._arm_head()  # the first bytes of the next request on a kept-alive connection
        if self._answered_early():
            self._discarded += len(data)
            if self._discarded > self.discard_limit:
                self.transport.close()
                return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_head()

    def handle_events(self) -> None:
        super().handle_events()
        self._track_body()
        if self.cycle is not None:
            extensions: dict[str, Any] = self.cycle.scope.setdefault("extensions", {})
            extensions[ABORT] = self._abort_response

    def _abort_response(self) -> None:
        """The ``ABORT`` extension (:mod:`common.sse_response`): drop the connection now, even
        with unsent bytes, and tell uvicorn the client is gone (no "returned without completing
        response" error)."""
        if self.cycle is not None:
            self.cycle.disconnected = True
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head()
        self._cancel_body()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        super().shutdown()
        if self._responding():
            grace = (self.config.timeout_graceful_shutdown or 2) / 2
            self.loop.call_later(grace, self._abort_at_shutdown)

    def _responding(self) -> bool:
        return (
            self.cycle is not None
            and not self.cycle.response_complete
            and not self.transport.is_closing()
        )

    def _abort_at_shutdown(self) -> None:
        """A response still going halfway through the graceful shutdown (typically an SSE
        client that stopped reading): close it, instead of uvicorn cancelling its task at the
        end (a traceback per stream). Streaming clients resume with ``Last-Event-ID``."""
        if self._responding():
            _log.info(
                "closed %s %s from %s at shutdown: its response was not finished%s",
                self.scope["method"],
                self.scope["path"],
                self._peer(),
                " (the client is not reading)" if self.flow.write_paused else "",
            )
            self.transport.abort()

    def _answered_early(self) -> bool:
        """The response is complete while the request's body is still coming."""
        cycle = self.cycle
        return (
            cycle is not None and cycle.response_complete and self.conn.their_state is h11.SEND_BODY
        )

    def _arm_head(self) -> None:
        self._cancel_head()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_expired)

    def _cancel_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _track_body(self) -> None:
        receiving = self.conn.their_state is h11.SEND_BODY
        if receiving and self.transport.get_protocol() is self:  # not upgraded to WebSocket
            if self._body_timer is None:
                self._discarded = 0
                self._body_timer = self.loop.call_later(self.body_timeout, self._body_expired)
        else:
            self._cancel_body()

    def _cancel_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _peer(self) -> str:
        return "{}:{}".format(*self.client) if self.client else "?"

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            _log.warning(
                "closing %s: no complete request head in %.1fs", self._peer(), self.head_timeout
            )
            self.on_head_timeout()
            self.transport.close()

    def _body_expired(self) -> None:
        self._body_timer = None
        if self.conn.their_state is not h11.SEND_BODY or self.transport.is_closing():
            return
        scope = cast(dict[str, Any], self.scope)
        if not scope.get(LOGGED):  # else it was answered 413 and said so: one line a request
            scope[LOGGED] = True
            answered = self.cycle is not None and self.cycle.response_started
            _log.warning(
                "closed %s %s from %s: request body not complete in %.1fs%s",
                scope["method"],
                scope["path"],
                self._peer(),
                self.body_timeout,
                " (after its response)" if answered else " (408)",
            )
            self.on_rejected("body_timeout")
        self._answer_408()
        self.transport.close()

    def _answer_408(self) -> None:
        cycle = self.cycle
        if cycle is None or cycle.response_started:
            return
        cycle.disconnected = True  # the application's own response, if it comes, is dropped
        body = f'{{"error": "request body not complete in {self.body_timeout:g}s"}}'.encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        events = [
            h11.Response(status_code=408, headers=headers, reason=b"Request Timeout"),
            h11.Data(data=body),
        ]
        with contextlib.suppress(h11.LocalProtocolError):
            for event in [*events, h11.EndOfMessage()]:
                data = self.conn.send(event)
                if data:
                    self.transport.write(data)


class UvicornServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the caller (several run in one process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve_http(server: uvicorn.Server, sock: socket.socket) -> None:
    """Serve on ``sock`` (bound by :func:`common.lifecycle.listen`). uvicorn ends the process
    with ``sys.exit`` when its start-up fails; here that is a failure of this task instead."""
    try:
        await server.serve(sockets=[sock])
    except SystemExit as exc:
        raise RuntimeError(f"the HTTP server did not start (uvicorn exit {exc.code})") from None


def _protocol(
    limits: HttpLimits,
    *,
    on_head_timeout: Callable[[], None] = _nothing,
    on_rejected: Callable[[str], None] = _nothing,
) -> type[DeadlineProtocol]:
    attributes = {
        "head_timeout": limits.head_timeout,
        "body_timeout": limits.body_timeout,
        "discard_limit": DISCARD_BYTES,
        "on_head_timeout": staticmethod(on_head_timeout),
        "on_rejected": staticmethod(on_rejected),
    }
    return type("Deadlines", (DeadlineProtocol,), attributes)


def server_config(
    app: Any,
    settings: ServiceSettings,
    *,
    on_head_timeout: Callable[[], None],
    on_rejected: Callable[[str], None],
    **options: Any,
) -> uvicorn.Config:
    """The uvicorn configuration of a service: its host and port, no lifespan (the service runs
    its own tasks), quiet logs, graceful shutdown bounded by half of ``shutdown_timeout``."""
    protocol = _protocol(
        HttpLimits.of(settings), on_head_timeout=on_head_timeout, on_rejected=on_rejected
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol,
        log_config=None,  # uvicorn's loggers propagate to the root handler (configure_logging)
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=max(1, int(settings.shutdown_timeout / 2)),
        **options,
    )


async def serve_emulator(
    app: Any, *, name: str, host: str, port: int, sock: socket.socket | None = None
) -> None:
    """Serve an emulator's ``app`` until cancelled, on ``sock`` or a socket bound to
    ``host:port`` first (:class:`~common.lifecycle.CannotListen`); cancelled, it still shuts
    down gracefully (lifespan, open streams: at most a few seconds) before returning."""
    sock = sock or listen(host, port, who=f"{name} emulator")
    limit_bodies(app, max_bytes=EMULATOR_LIMITS.max_body_bytes)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=_protocol(EMULATOR_LIMITS),
        log_config=None,
        log_level="warning",
        timeout_graceful_shutdown=3,
    )
    server = UvicornServer(config)
    task = asyncio.create_task(serve_http(server, sock), name=f"{name}-emulator:{port}")
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(task, timeout=8)
        raise
    finally:
        sock.close()
