"""The Ditto source: one WebSocket session, subscriptions confirmed by their exact ``:ACK``.

After every (re)connect the source sends ``START-SEND-EVENTS`` (with ``namespaces``, ``filter``
and ``extraFields`` when configured), ``START-SEND-MESSAGES`` and, when asked,
``START-SEND-LIVE-EVENTS``, and counts the subscription live only after each command's
``<command>:ACK``. Protocol messages that arrive while it waits are kept, not skipped.

Reading never waits for the log: a reader task moves every frame into a buffer
(``ditto_buffer``) and a second task normalises and commits from it, because Ditto drops events
for sessions that read slowly. If the buffer ever overflows, the overflow is counted
(``beats_source_dropped_total{reason="buffer_full"}``) and the session is restarted so that
reconciliation repairs the state.

Reconciliation: Ditto keeps no events for a disconnected session. After every reconnect the
source reads the current state of the things it has seen (and of the configured namespaces)
over the HTTP API and emits one ``beats.ditto.twin.snapshot`` per thing: "state may have changed
while we were away". Snapshots say nothing about what changed in between; twin events do.

Pings keep the connection honest (``ditto_ping_interval``); a missing pong, a closed socket or a
failed commit reconnect with backoff. HTTP 401/403 at the handshake is reported in ``/readyz``
and retried slowly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import re
from collections import deque
from datetime import UTC, datetime
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.frames import CloseCode

from beats.ditto.normalize import normalize, snapshot_event
from beats.ditto.protocol import ACK_SUFFIX, control, jwt_token
from beats.ditto.settings import DittoSettings
from common.envelope import CloudEvent
from common.eventlog import StoredEvent
from common.inflight import InFlight
from common.jsonsafe import loads
from common.normalize import Rejected
from common.pipeline import Pipeline
from common.supervise import Backoff

__all__ = ["DittoSource"]

_log = logging.getLogger(__name__)
_BATCH = 500
_MAX_PENDING = 1000
_CONTROL = re.compile(r"(START|STOP)-SEND(-[A-Z]+)+(:ACK)?")
"""A protocol control frame (``START-SEND-EVENTS:ACK``); anything else is a message."""
_Commit = asyncio.Future[list[StoredEvent | None]]


class SessionLost(Exception):
    """The session must be restarted (commit failed, buffer overflowed, no ACK)."""


class DittoSource:
    def __init__(self, settings: DittoSettings) -> None:
        self.settings = settings
        self.ws_url = settings.ws_url()
        self.http_url = settings.ditto_url.rstrip("/")
        self.seen: set[str] = set()
        self.sessions = 0
        self.buffered_bytes = 0
        self._token: str | None = None

    async def run(self, pipeline: Pipeline) -> None:
        backoff = Backoff(min_delay=0.5, max_delay=30.0)
        refused = Backoff(min_delay=30.0, max_delay=300.0)
        pipeline.set_ready("ditto", False, "connecting")
        while True:
            try:
                await self._session(pipeline, backoff)
                detail, delay = "the server closed the session", backoff.next()
            except InvalidStatus as exc:
                status = exc.response.status_code
                detail = f"HTTP {status} at the WebSocket handshake"
                if status in (401, 403):
                    detail += ": check --ditto-username/--ditto-password or --ditto-token"
                delay = refused.next() if status in (401, 403) else backoff.next()
            except (OSError, TimeoutError, WebSocketException, SessionLost) as exc:
                detail, delay = f"{type(exc).__name__}: {exc}", backoff.next()
                if isinstance(exc, ConnectionClosed) and exc.rcvd is None and exc.sent is not None \
                        and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:  # fmt: skip
                    await self._too_big(pipeline)
            pipeline.metrics.source_connected.set(0)
            pipeline.metrics.reconnects.inc()
            pipeline.set_ready("ditto", False, detail)
            _log.warning("ditto %s: %s; reconnecting in %.1fs", self.ws_url, detail, delay)
            await asyncio.sleep(delay)

    async def _too_big(self, pipeline: Pipeline) -> None:
        """A message beyond twice ``--ditto-max-message-bytes`` closed the session (WebSocket
        1009): its content is unknown, but it is not silent: a dead letter says so."""
        limit = 2 * self.settings.ditto_max_message_bytes
        reason = f"a message over {limit} bytes closed the WebSocket session (1009); not kept"
        with contextlib.suppress(Exception):
            await pipeline.dead_letter(raw=b"", reason=reason, source=self.ws_url)

    def _headers(self) -> dict[str, str]:
        s = self.settings
        self._token = self._read_token()
        if self._token:
            return {"Authorization": f"Bearer {self._token}"}
        if s.ditto_username and s.ditto_password:
            pair = f"{s.ditto_username}:{s.ditto_password.get_secret_value()}".encode()
            return {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}
        return {}

    def _read_token(self) -> str | None:
        if self.settings.ditto_token_file is not None:
            with contextlib.suppress(OSError):
                return self.settings.ditto_token_file.read_text().strip() or None
        token = self.settings.ditto_token
        return token.get_secret_value() if token else None

    async def _session(self, pipeline: Pipeline, backoff: Backoff) -> None:
        buffer: deque[str | bytes] = deque()
        self.buffered_bytes = 0
        async with websockets.connect(
            self.ws_url,
            additional_headers=self._headers(),
            ping_interval=self.settings.ditto_ping_interval,
            ping_timeout=self.settings.ditto_ping_interval,
            open_timeout=10,
            max_size=2 * self.settings.ditto_max_message_bytes,
        ) as ws:
            await self._subscribe(ws, buffer)
            backoff.reset()
            self.sessions += 1
            pipeline.metrics.source_connected.set(1)
            pipeline.set_ready("ditto", True, f"subscribed on {self.ws_url}")
            try:
                await self._stream(ws, buffer, pipeline)
            except* (SessionLost, WebSocketException, OSError, TimeoutError) as group:
                raise group.exceptions[0] from None

    async def _stream(
        self, ws: ClientConnection, buffer: deque[str | bytes], pipeline: Pipeline
    ) -> None:
        wake = asyncio.Event()
        wake.set()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._read(ws, buffer, wake, pipeline), name="ditto-read")
            tasks.create_task(self._process(buffer, wake, pipeline), name="ditto-process")
            tasks.create_task(self._refresh_token(ws), name="ditto-token")
            if self.settings.reconcile and (self.sessions > 1 or self.settings.namespaces):
                tasks.create_task(self._reconcile(pipeline), name="ditto-reconcile")

    async def _subscribe(self, ws: ClientConnection, buffer: deque[str | bytes]) -> None:
        s = self.settings
        commands = [
            control(
                "START-SEND-EVENTS",
                namespaces=s.namespaces,
                filter=s.filter,
                extra_fields=s.extra_fields,
            ),
            control("START-SEND-MESSAGES", namespaces=s.namespaces, extra_fields=s.extra_fields),
        ]
        if s.live_events:
            commands.append(
                control(
                    "START-SEND-LIVE-EVENTS",
                    namespaces=s.namespaces,
                    filter=s.filter,
                    extra_fields=s.extra_fields,
                )
            )
        for command in commands:
            await ws.send(command)
            expected = command.partition("?")[0] + ACK_SUFFIX
            async with asyncio.timeout(s.ditto_ack_timeout):
                while (frame := await ws.recv()) != expected:
                    buffer.append(frame)  # protocol messages before the ACK are kept
            _log.info("ditto: %s", expected)

    async def _read(
        self,
        ws: ClientConnection,
        buffer: deque[str | bytes],
        wake: asyncio.Event,
        pipeline: Pipeline,
    ) -> None:
        async for frame in ws:
            full = len(buffer) >= self.settings.ditto_buffer
            if full or self.buffered_bytes >= self.settings.ditto_buffer_bytes:
                pipeline.metrics.dropped.labels("buffer_full").inc()
                raise SessionLost("buffer full: restarting the session to reconcile")
            buffer.append(frame)
            self.buffered_bytes += len(frame)
            wake.set()
        raise SessionLost(f"closed by Ditto ({ws.close_code})")

    async def _process(
        self, buffer: deque[str | bytes], wake: asyncio.Event, pipeline: Pipeline
    ) -> None:
        pending = InFlight(max_commits=_MAX_PENDING)
        failed = asyncio.Event()
        while True:
            if not buffer:
                wake.clear()
                await wake.wait()
            batch = [buffer.popleft() for _ in range(min(_BATCH, len(buffer)))]
            size = sum(map(len, batch))
            self.buffered_bytes -= size
            future = pipeline.submit([e for f in batch for e in self._events(f, pipeline)])
            future.add_done_callback(lambda f: _mark_failure(f, failed))
            await pending.add(future, size)
            if failed.is_set():
                raise SessionLost("a commit failed")

    def _events(self, frame: str | bytes, pipeline: Pipeline) -> list[CloudEvent]:
        limit = self.settings.ditto_max_message_bytes
        size = len(frame)
        if isinstance(frame, str) and 4 * size > limit:
            size = len(frame.encode("utf-8", "surrogatepass"))
        if size > limit:
            pipeline.received()
            reason = f"message of {size} bytes exceeds {limit} (--ditto-max-message-bytes)"
            return [pipeline.rejected(raw=frame, reason=reason, source=self.ws_url)]
        text = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
        if isinstance(frame, str) and _CONTROL.fullmatch(text.strip()):
            _log.info("ditto: control message %r", text[:200])
            return []
        pipeline.received()
        received_at = datetime.now(UTC)

        def parse() -> list[CloudEvent]:
            message = loads(frame, what="Ditto message")
            if not isinstance(message, dict):
                raise Rejected("Ditto message is not a JSON object")
            return normalize(
                message, source=self.http_url, received_at=received_at, depth_checked=True
            )

        events = pipeline.guarded(parse, raw=frame, source=self.ws_url)
        self.seen.update(str(e.subject) for e in events if e.subject)
        return events

    async def _refresh_token(self, ws: ClientConnection) -> None:
        if self.settings.ditto_token_file is None:
            return
        while True:
            await asyncio.sleep(5)
            token = self._read_token()
            if token and token != self._token:
                await ws.send(jwt_token(token))
                self._token = token
                _log.info("ditto: sent a refreshed token on the open session")

    async def _reconcile(self, pipeline: Pipeline) -> None:
        try:
            things = await self._fetch_things()
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            pipeline.metrics.source_errors.labels("reconcile").inc()
            _log.warning("ditto: reconciliation failed (%s); the session goes on", exc)
            return
        events: list[CloudEvent] = []
        for thing in things:
            events += pipeline.guarded(
                functools.partial(_snapshot, thing, self.http_url),
                raw=json.dumps(thing),
                source=self.http_url,
            )
        if events:
            await pipeline.commit(events)
        _log.info("ditto: reconciled %d things after reconnect", len(things))

    async def _search(
        self, http: httpx.AsyncClient, fields: dict[str, str]
    ) -> list[dict[str, Any]]:
        return await _search_pages(http, list(self.settings.namespaces), fields)

    async def _fetch_things(self) -> list[dict[str, Any]]:
        fields = {"fields": "thingId,policyId,attributes,features,_revision,_modified"}
        headers = self._headers()
        found: dict[str, dict[str, Any]] = {}
        async with httpx.AsyncClient(base_url=self.http_url, headers=headers, timeout=30) as http:
            ids = sorted(self.seen)
            for start in range(0, len(ids), 100):
                params = {"ids": ",".join(ids[start : start + 100]), **fields}
                response = await http.get("/api/2/things", params=params)
                response.raise_for_status()
                found.update({t["thingId"]: t for t in loads(response.content, what="things")})
            if self.settings.namespaces:
                found.update({t["thingId"]: t for t in await self._search(http, fields)})
        return list(found.values())


async def _search_pages(
    http: httpx.AsyncClient, namespaces: list[str], fields: dict[str, str]
) -> list[dict[str, Any]]:
    """Every thing of the namespaces, following Ditto's search cursor (pages of 200)."""
    items: list[dict[str, Any]] = []
    option = "size(200)"
    while True:
        params = {"namespaces": ",".join(namespaces), "option": option, **fields}
        response = await http.get("/api/2/search/things", params=params)
        response.raise_for_status()
        body = loads(response.content, what="search result")
        items += body["items"]
        if not body.get("cursor"):
            return items
        option = f"size(200),cursor({body['cursor']})"


def _snapshot(thing: dict[str, Any], source: str) -> list[CloudEvent]:
    return [snapshot_event(thing, source=source)]


def _mark_failure(future: _Commit, failed: asyncio.Event) -> None:
    if future.cancelled() or future.exception() is not None:
        failed.set()
