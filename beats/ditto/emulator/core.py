"""The emulator's behaviour without the web framework: auth, changes, messages, client frames."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from beats.ditto.emulator.sessions import Hub, Session, error_frame
from beats.ditto.emulator.things import Change, DittoError, ThingStore
from beats.ditto.protocol import ProtocolError, parse_control, parse_envelope

__all__ = ["DittoEmulator", "Outgoing", "parse_timeout"]

DEFAULT_MESSAGE_TIMEOUT = 10.0
"""Ditto waits this long for a reply to an HTTP message unless ``timeout`` says otherwise."""
_LIVE_STREAMS = {"messages": "messages", "events": "live-events", "commands": "live-commands"}
"""Live signals a client may send; Ditto routes them to the other subscribed sessions."""
_DURATION = re.compile(r"(?P<amount>\d+)(?P<unit>ms|s|m)?")


def parse_timeout(text: str | None) -> float:
    """Ditto's duration syntax: ``250ms``, ``10s``, ``1m`` or plain seconds; at most 60 s."""
    if text is None or text == "":
        return DEFAULT_MESSAGE_TIMEOUT
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise DittoError(400, "timeout.invalid", f"The timeout '{text}' is not valid.")
    factor = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match.group("unit")]
    seconds = int(match.group("amount")) * factor
    if seconds > 60:
        raise DittoError(400, "timeout.invalid", "The timeout must not exceed 60 seconds.")
    return seconds


@dataclass(frozen=True)
class Outgoing:
    """An HTTP message as it leaves the emulator towards the WebSocket sessions."""

    thing_id: str
    direction: str
    subject: str
    payload: Any
    content_type: str
    feature_id: str | None = None
    correlation_id: str | None = None


class DittoEmulator:
    """Things, sessions and the Ditto protocol signals that changes and messages produce."""

    def __init__(
        self,
        *,
        username: str,
        password: str,
        token: str | None = None,
        session_buffer: int = 10_000,
    ) -> None:
        self.username, self.password, self.token = username, password, token
        self.session_buffer = session_buffer
        self.store = ThingStore(originator=f"nginx:{username}")
        self.hub = Hub()

    @property
    def things(self) -> dict[str, dict[str, Any]]:
        return self.store.things

    @property
    def sessions(self) -> set[Session]:
        return self.hub.sessions

    @property
    def dropped(self) -> int:
        """Signals dropped so far for sessions that read too slowly (open sessions only)."""
        return self.hub.dropped

    def authenticate(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        """The authenticated subject (``nginx:<user>`` or ``jwt:<token owner>``), else ``None``.

        Basic auth as Ditto's nginx does it, or ``Authorization: Bearer <token>`` / the
        ``access_token`` query parameter (for clients that cannot set headers)."""
        auth = headers.get("authorization", "")
        scheme, _, credentials = auth.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(credentials).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            good = hmac.compare_digest(user, self.username) & hmac.compare_digest(
                password, self.password
            )
            return f"nginx:{user}" if good else None
        bearer = credentials if scheme.lower() == "bearer" else query.get("access_token")
        if self.token is not None and bearer and hmac.compare_digest(bearer, self.token):
            return "jwt:emulator"
        return None

    def apply(self, change: Change) -> Change:
        """Publish a change as its twin event to the subscribed sessions."""
        self.hub.publish("twin-events", change.thing_id, change.event(), change.thing)
        return change

    def message(self, outgoing: Outgoing, *, response_required: bool) -> dict[str, Any]:
        """Build a live message and offer it to every session subscribed to messages."""
        thing = self.store.things.get(outgoing.thing_id)
        if thing is None:
            self.store.get(outgoing.thing_id)  # raises Ditto's "thing not found"
        frame = _message_frame(outgoing, response_required)
        self.hub.publish("messages", outgoing.thing_id, frame, thing)
        return frame

    async def send_message(self, outgoing: Outgoing, timeout: float) -> dict[str, Any] | None:
        """Send a live message; with ``timeout`` > 0 wait for the correlated reply frame.

        ``None`` for fire-and-forget (``timeout=0``); raises a 408 ``DittoError`` when no
        session replied in time (as Ditto does)."""
        correlation = outgoing.correlation_id or str(uuid.uuid4())
        outgoing = replace(outgoing, correlation_id=correlation)
        if timeout <= 0:
            self.message(outgoing, response_required=False)
            return None
        reply = self.hub.expect_response(correlation)
        try:
            self.message(outgoing, response_required=True)
            return await asyncio.wait_for(reply, timeout)
        except TimeoutError:
            raise DittoError(
                408, "command.timeout", f"No response to the message within {timeout:g}s."
            ) from None
        finally:
            reply.cancel()

    def client_text(self, session: Session, text: str) -> str | None:
        """A text frame from a client: control command or protocol JSON; the reply, if any.

        Live messages, live events and live commands are routed to the other sessions
        subscribed to them; a reply (with ``status``) completes the HTTP message request with
        its correlation id. Twin commands are not emulated: they get an error frame (501)."""
        if not text.lstrip().startswith("{"):
            command = parse_control(text)
            session.commands.append(text)
            return session.control(command) if command is not None else None
        return self._client_json(session, text)

    def _client_json(self, session: Session, text: str) -> str | None:
        try:
            frame = json.loads(text)
            envelope = parse_envelope(frame if isinstance(frame, dict) else {})
        except (ValueError, ProtocolError) as exc:
            return json.dumps(error_frame(400, "json.invalid", f"Not a Ditto message: {exc}"))
        topic, correlation = envelope.topic, envelope.header("correlation-id")
        stream = _LIVE_STREAMS.get(topic.criterion) if topic.channel == "live" else None
        if stream is not None and topic.thing_id:
            if envelope.status is not None:  # a reply: to the HTTP request waiting for it
                self.hub.respond(frame)
                return None
            thing = self.store.things.get(topic.thing_id)
            self.hub.publish(stream, topic.thing_id, frame, thing, exclude=session)
            return None
        errors = f"{topic.namespace}/{topic.name}/things/{topic.channel or 'twin'}/errors"
        return json.dumps(
            error_frame(
                501,
                "emulator:signal.unsupported",
                "The emulator accepts live signals and replies, not twin commands.",
                topic=errors,
                correlation_id=correlation if isinstance(correlation, str) else None,
            )
        )

    async def burst(self, thing_id: str, count: int) -> int:
        """``count`` quick modifications of ``attributes/counter`` (the thing is created first if
        needed); yields to the event loop between changes so that send loops keep up."""
        if thing_id not in self.store.things:
            self.apply(self.store.put(thing_id, "/", {"attributes": {"counter": -1}}))
        for n in range(count):
            self.apply(self.store.put(thing_id, "/attributes/counter", n))
            await asyncio.sleep(0)
        return count


def _message_frame(outgoing: Outgoing, response_required: bool) -> dict[str, Any]:
    namespace, name = outgoing.thing_id.split(":", 1)
    feature = f"/features/{outgoing.feature_id}" if outgoing.feature_id else ""
    headers: dict[str, Any] = {
        "correlation-id": outgoing.correlation_id or str(uuid.uuid4()),
        "content-type": outgoing.content_type,
        "version": 2,
        "response-required": response_required,
        "ditto-message-direction": "TO" if outgoing.direction == "inbox" else "FROM",
        "ditto-message-subject": outgoing.subject,
        "ditto-message-thing-id": outgoing.thing_id,
    }
    if outgoing.feature_id:
        headers["ditto-message-feature-id"] = outgoing.feature_id
    return {
        "topic": f"{namespace}/{name}/things/live/messages/{outgoing.subject}",
        "headers": headers,
        "path": f"{feature}/{outgoing.direction}/messages/{outgoing.subject}",
        "value": outgoing.payload,
    }
