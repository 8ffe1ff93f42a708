"""WebSocket sessions of the emulator: subscriptions, filters, enrichment, bounded queues.

Like Ditto's gateway, every session gets every signal it subscribed to (no load balancing).
Filters follow ``StreamingSession``: the RQL filter of ``START-SEND-EVENTS`` /
``START-SEND-LIVE-EVENTS`` is evaluated on the *changed* part of the thing (built from the
event's path and value) merged with the ``extraFields`` enrichment, plus the placeholders
``topic:*`` and ``resource:*``; messages and live commands are filtered by namespace only.
``extra`` is picked from the thing after the change (a deleted thing cannot be enriched).

Slow readers: each session has a bounded queue (``buffer``). Publishing never waits; when a
session's queue is full the signal is dropped for that session and counted in
``Session.dropped`` — Ditto does the same (its gateway drops events beyond a
``backpressure-buffer-size`` of 200 per session). Other sessions are never slowed down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from beats.ditto.emulator.things import select
from beats.ditto.protocol import Control, ack, parse_topic
from beats.ditto.rql import Predicate, RqlError, parse

__all__ = ["Hub", "Session", "Subscription", "error_frame"]

_FILTERED = frozenset({"twin-events", "live-events"})


class Socket(Protocol):
    async def send_text(self, data: str) -> None: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


@dataclass(frozen=True)
class Subscription:
    namespaces: tuple[str, ...]
    predicate: Predicate | None
    extra_fields: tuple[str, ...]


class Session:
    """One connected client: what it subscribed to and its outgoing queue."""

    def __init__(self, socket: Socket, buffer: int, subject: str) -> None:
        self.socket = socket
        self.subject = subject
        self.queue: asyncio.Queue[str | bytes] = asyncio.Queue(buffer)
        self.subscriptions: dict[str, Subscription] = {}
        self.commands: list[str] = []
        self.jwt_tokens: list[str] = []
        self.dropped = 0
        self.sent = 0

    def offer(self, text: str | bytes) -> bool:
        """Queue a frame without waiting; ``False`` (and counted) when the queue is full.
        ``bytes`` go out as a binary frame (a test switch: Ditto sends text frames)."""
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.dropped += 1
            return False
        return True

    def control(self, command: Control) -> str | None:
        """Apply a text control frame; the reply to send (``None``: none)."""
        if command.stream is None:  # JWT-TOKEN: accepted silently, as by Ditto
            self.jwt_tokens.append(command.jwt_token or "")
            return None
        if not command.start:
            self.subscriptions.pop(command.stream, None)
            return ack(command.command)
        predicate = None
        if command.filter and command.stream in _FILTERED:
            try:
                predicate = parse(command.filter)
            except RqlError as exc:
                return json.dumps(error_frame(400, "rql.expression.invalid", str(exc)))
        extra = tuple(f.strip("/") for f in (command.extra_fields or "").split(",") if f.strip())
        self.subscriptions[command.stream] = Subscription(command.namespaces, predicate, extra)
        return ack(command.command)

    async def send_loop(self) -> None:
        """Move queued frames to the socket until it closes (runs as one task per session)."""
        with contextlib.suppress(Exception):
            while True:
                frame = await self.queue.get()
                if isinstance(frame, bytes):
                    await self.socket.send_bytes(frame)
                else:
                    await self.socket.send_text(frame)
                self.sent += 1


def error_frame(
    status: int,
    error: str,
    message: str,
    *,
    topic: str = "unknown/unknown/things/twin/errors",
    correlation_id: str | None = None,
) -> dict[str, Any]:
    """A Ditto error response; ``unknown:unknown`` is Ditto's fallback thing id."""
    return {
        "topic": topic,
        "headers": {"correlation-id": correlation_id or str(uuid.uuid4()), "version": 2},
        "path": "/",
        "value": {"status": status, "error": error, "message": message},
        "status": status,
    }


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        elif key not in merged:
            merged[key] = value
    return merged


def _partial_thing(thing_id: str, signal: Mapping[str, Any]) -> dict[str, Any]:
    """The thing data an event carries: its value placed at its path, plus ``thingId``."""
    partial: dict[str, Any] = {"thingId": thing_id}
    if "value" not in signal or "/messages/" in str(signal.get("path", "")):
        return partial
    parts = [p for p in str(signal.get("path", "/")).split("/") if p]
    value = signal["value"]
    if not parts:
        return {**value, **partial} if isinstance(value, dict) else partial
    node = partial
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return partial


def _placeholders(signal: Mapping[str, Any]) -> dict[str, Any]:
    topic = parse_topic(str(signal["topic"]))
    rest_key = "topic:subject" if topic.criterion == "messages" else "topic:action"
    path = str(signal.get("path", "/"))
    resource = "message" if "/messages/" in path else "thing"
    return {
        "topic:full": str(topic),
        "topic:namespace": topic.namespace,
        "topic:entityName": topic.name,
        "topic:group": topic.group,
        "topic:channel": topic.channel,
        "topic:criterion": topic.criterion,
        rest_key: topic.rest,
        "topic:action-subject": topic.rest,
        "resource:type": resource,
        "resource:path": path,
    }


class Hub:
    """All sessions; delivers each signal to the sessions subscribed to its stream."""

    def __init__(self) -> None:
        self.sessions: set[Session] = set()
        self.responses: dict[str, asyncio.Future[dict[str, Any]]] = {}

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self.sessions)

    def publish(
        self,
        stream: str,
        thing_id: str,
        signal: Mapping[str, Any],
        thing: Mapping[str, Any] | None,
        *,
        exclude: Session | None = None,
    ) -> int:
        """Offer ``signal`` to every subscribed session; the number of sessions it was queued to."""
        namespace = thing_id.split(":", 1)[0]
        delivered = 0
        for session in list(self.sessions):
            subscription = session.subscriptions.get(stream)
            if subscription is None or session is exclude:
                continue
            if subscription.namespaces and namespace not in subscription.namespaces:
                continue
            frame = dict(signal)
            extra = select(thing or {}, subscription.extra_fields)
            if subscription.extra_fields and thing is not None:
                frame["extra"] = extra
            if subscription.predicate is not None:
                context = _deep_merge(_partial_thing(thing_id, signal), extra)
                if not subscription.predicate({**context, **_placeholders(signal)}):
                    continue
            delivered += session.offer(json.dumps(frame))
        return delivered

    def expect_response(self, correlation_id: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.responses[correlation_id] = future
        future.add_done_callback(lambda _: self.responses.pop(correlation_id, None))
        return future

    def respond(self, frame: Mapping[str, Any]) -> bool:
        """Complete the HTTP request waiting for this live message response, if any."""
        headers = frame.get("headers")
        correlation = headers.get("correlation-id") if isinstance(headers, Mapping) else None
        future = self.responses.get(correlation) if isinstance(correlation, str) else None
        if future is None or future.done():
            return False
        future.set_result(dict(frame))
        return True

    async def drop_connections(self, code: int = 1011) -> int:
        """Close every WebSocket (the test switch); the number of sessions closed."""
        sessions = list(self.sessions)
        for session in sessions:
            with contextlib.suppress(Exception):
                await session.socket.close(code=code)
        return len(sessions)
