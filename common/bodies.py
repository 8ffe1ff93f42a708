"""Request bodies: bounded in size as they stream, one log line per refused or aborted request.

:class:`BodyLimit` (installed by :func:`limit_bodies` on every service's app) counts the bytes
an application reads through ``receive``: a body declared (``Content-Length``) or streamed
(chunked included) beyond ``max_bytes`` raises :class:`BodyTooLarge`, a 413, at once, so at
most ``max_bytes`` plus one chunk is ever buffered. A route with its own bound reads with
:func:`read_body`. Each request answered 413, whoever answered it, is logged once and counted
as ``too_large``; a client that goes away in the middle of its body is logged once and counted
as ``disconnected``, and the ``ClientDisconnect`` it raises goes no further (no traceback). Body
deadlines are the HTTP protocol's (:mod:`common.http`), which logs and counts them itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DISCARD_BYTES", "LOGGED", "BodyLimit", "BodyTooLarge", "limit_bodies", "read_body"]

_log = logging.getLogger(__name__)

DISCARD_BYTES = 64 * 1024 * 1024
"""What the server reads and drops of a body it refused before reading it (413, 401...), so that
the client, which sends its whole body before it reads the answer, gets that answer and keeps
its connection (:class:`common.http.DeadlineProtocol`). A refused body with more than this to
come, or of unknown length (chunked), is answered with ``Connection: close`` instead."""

LOGGED = "beats.http_logged"
"""Scope key set once a request was logged and counted as refused or aborted, here or by the
HTTP protocol (body deadline): one line per request."""


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"body over {limit} bytes")
        self.limit = limit


def _declared(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _has_body(scope: Scope) -> bool:
    if any(name == b"transfer-encoding" for name, _ in scope["headers"]):
        return True
    return bool(_declared(scope))


async def read_body(request: Request, limit: int) -> bytes:
    """The body of ``request``, at most ``limit`` bytes: :class:`BodyTooLarge` as soon as more
    is declared or has arrived (what follows is not read)."""
    declared = _declared(request.scope)
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class _Request:
    """What :class:`BodyLimit` knows of one request."""

    scope: Scope
    receive: Receive
    send: Send
    limit: int
    on_rejected: Callable[[str], None]
    received: int = 0
    body_complete: bool = False
    answered: bool = False

    def describe(self) -> str:
        client = self.scope.get("client")
        peer = "{}:{}".format(*client) if client else "?"
        return f"{self.scope['method']} {self.scope['path']} from {peer}"

    async def counted_receive(self) -> Message:
        if not self.body_complete:
            declared = _declared(self.scope)
            if declared is not None and declared > self.limit:
                raise BodyTooLarge(self.limit)
        message = await self.receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.body_complete = not message.get("more_body", False)
            if self.received > self.limit:
                raise BodyTooLarge(self.limit)
        elif message["type"] == "http.disconnect" and not self.body_complete:
            self.disconnected()
        return message

    async def watched_send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.answered = True
            if message["status"] == 413:
                self._once("too_large", "refused %s: request body too large (413, %d bytes read)")
            if not self.body_complete and not self._discardable():
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"connection", b"close")]}  # fmt: skip
        await self.send(message)

    def _discardable(self) -> bool:
        """Whether the rest of the body may be read and dropped (see :data:`DISCARD_BYTES`)."""
        declared = _declared(self.scope)
        return declared is not None and declared - self.received <= DISCARD_BYTES

    def disconnected(self) -> None:
        if not self.answered:  # else the client left after its answer: nothing was lost
            self._once("disconnected", "aborted %s: the client left after %d bytes of its body")

    def _once(self, reason: str, message: str) -> None:
        if not self.scope.get(LOGGED):
            self.scope[LOGGED] = True
            self.on_rejected(reason)
            _log.warning(message, self.describe(), self.received)


class BodyLimit:
    """Pure ASGI middleware bounding request bodies (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, on_rejected: Callable[[str], None]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_rejected = on_rejected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            # nothing to bound (a GET, an SSE stream): no wrapper on each of its writes
            await self.app(scope, receive, send)
            return
        request = _Request(scope, receive, send, self.max_bytes, self.on_rejected)
        try:
            await self.app(scope, request.counted_receive, request.watched_send)
        except ClientDisconnect:
            request.disconnected()


def limit_bodies(
    app: Any, *, max_bytes: int, on_rejected: Callable[[str], None] = lambda reason: None
) -> None:
    """Install :class:`BodyLimit` on a Starlette/FastAPI ``app`` (before it serves), innermost of
    its middleware, right around the routes: its 413 is raised where the exception handlers turn
    it into a response (not in the task of a ``BaseHTTPMiddleware`` reading ahead), and the
    ``ClientDisconnect`` it ends never reaches the error middleware that logs a traceback."""
    if app.middleware_stack is not None:
        raise RuntimeError("limit_bodies() must be called before the app serves")
    app.user_middleware.append(Middleware(BodyLimit, max_bytes=max_bytes, on_rejected=on_rejected))
