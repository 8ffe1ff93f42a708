"""The Ditto Protocol as the beat and the emulator speak it: topics, envelopes, control frames.

Pure functions and data, no I/O. Checked against Eclipse Ditto's documentation
(``protocol-specification*.md``, ``httpapi-protocol-bindings-websocket.md``) and its gateway
(``ProtocolMessageType``, ``ProtocolMessageExtractor``, ``WebSocketRoute``):

* Topic: ``{namespace}/{name}/{group}/{channel}/{criterion}/{action|subject}``. ``group`` is
  ``things``, ``policies`` or ``connections``; ``channel`` (``twin``/``live``) is absent for
  policies and for some search errors (``_/_/things/search/errors``). For ``messages`` everything
  after ``messages/`` is the subject, which may itself contain ``/``. ``_/_`` stands for "no
  particular entity" (search and connection signals).
* Envelope: ``topic``, ``headers``, ``path`` (required); ``value``, ``fields``, ``extra``,
  ``revision``, ``timestamp``, ``status`` (optional). ``value`` may be absent, which is not the
  same as ``null`` (a merge-patch deletion).
* Control frames are plain text: ``START-SEND-EVENTS[?namespaces=a,b&filter=...&extraFields=...]``
  and friends, answered with ``<command>:ACK`` once the subscription is live; ``JWT-TOKEN?
  jwtToken=...`` gets no reply. Ditto recognises a command by prefix, takes the parameters after
  the first ``?``, splits them on ``&`` and the first ``=``, and URL-decodes them the Java
  ``URLDecoder`` way (``+`` is a space), so :func:`control` percent-encodes everything that
  could be misread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, unquote_plus

__all__ = [
    "ACK_SUFFIX",
    "COMMANDS",
    "CONTENT_TYPE",
    "EVENT_ACTIONS",
    "JWT_TOKEN",
    "MERGE_PATCH",
    "STREAMS",
    "WILDCARD",
    "Control",
    "Envelope",
    "ProtocolError",
    "Topic",
    "ack",
    "control",
    "header",
    "jwt_token",
    "parse_control",
    "parse_envelope",
    "parse_topic",
]

CONTENT_TYPE: Final = "application/vnd.eclipse.ditto+json"
MERGE_PATCH: Final = "application/merge-patch+json"
ACK_SUFFIX: Final = ":ACK"
JWT_TOKEN: Final = "JWT-TOKEN"
WILDCARD: Final = "_"
EVENT_ACTIONS: Final = frozenset({"created", "modified", "merged", "deleted", "migrated"})
STREAMS: Final[Mapping[str, str]] = {
    "EVENTS": "twin-events",
    "MESSAGES": "messages",
    "LIVE-COMMANDS": "live-commands",
    "LIVE-EVENTS": "live-events",
    "POLICY-ANNOUNCEMENTS": "policy-announcements",
}
"""Streaming types by the name used in ``START-SEND-<name>`` / ``STOP-SEND-<name>``."""

COMMANDS: Final = (
    *(f"{verb}-SEND-{name}" for name in STREAMS for verb in ("START", "STOP")),
    JWT_TOKEN,
)
"""Every text control command Ditto's gateway knows (``ProtocolMessageType``)."""

_GROUPS: Final = frozenset({"things", "policies", "connections"})
_CHANNELS: Final = frozenset({"twin", "live"})
_CRITERIA: Final = frozenset(
    {"commands", "events", "search", "messages", "errors", "acks", "announcements", "streaming"}
)


class ProtocolError(ValueError):
    """A frame that does not follow the Ditto Protocol; the message says why."""


@dataclass(frozen=True)
class Topic:
    namespace: str
    name: str
    group: str
    channel: str | None
    criterion: str
    rest: str
    """The action for commands and events, the subject for messages, "" when absent."""
    text: str = field(default="", compare=False)
    """The topic as received (``str(topic)`` rebuilds it when empty)."""

    @property
    def wildcard(self) -> bool:
        """``_/_/...``: a signal about no particular entity (search, connections)."""
        return self.namespace == WILDCARD and self.name == WILDCARD

    @property
    def entity_id(self) -> str | None:
        """``namespace:name`` (a thing or policy id), ``None`` for a wildcard topic."""
        return None if self.wildcard else f"{self.namespace}:{self.name}"

    @property
    def thing_id(self) -> str | None:
        return self.entity_id if self.group == "things" else None

    def __str__(self) -> str:
        if self.text:
            return self.text
        parts = [self.namespace, self.name, self.group, self.channel, self.criterion, self.rest]
        return "/".join(p for p in parts if p)


def parse_topic(topic: str) -> Topic:
    """Split a topic; :class:`ProtocolError` with the reason when it does not follow the layout."""
    parts = topic.split("/")
    if len(parts) < 4 or not parts[0] or not parts[1]:
        raise ProtocolError(f"topic {topic!r} is not namespace/name/group/...")
    namespace, name, group, rest_parts = parts[0], parts[1], parts[2], parts[3:]
    if group not in _GROUPS:
        raise ProtocolError(f"topic {topic!r} has unknown group {group!r}")
    channel: str | None = None
    if rest_parts[0] in _CHANNELS:
        channel, rest_parts = rest_parts[0], rest_parts[1:]
    elif group == "things" and rest_parts[0] not in ("search", "errors"):
        raise ProtocolError(f"topic {topic!r} has unknown channel {rest_parts[0]!r}")
    if not rest_parts or rest_parts[0] not in _CRITERIA:
        raise ProtocolError(f"topic {topic!r} has no known criterion")
    criterion, rest = rest_parts[0], "/".join(rest_parts[1:])
    if channel is None and criterion == "search" and rest == "errors":
        criterion, rest = "errors", ""  # search errors: ``_/_/things/search/errors``
    if criterion == "messages" and not rest:
        raise ProtocolError(f"topic {topic!r} has no message subject")
    return Topic(namespace, name, group, channel, criterion, rest, topic)


_ABSENT: Any = object()


@dataclass(frozen=True)
class Envelope:
    """One Ditto Protocol JSON message, checked field by field.

    ``has_value`` tells an absent ``value`` from an explicit ``null``. Optional fields of the
    wrong JSON type are kept as sent in ``raw`` but read as ``None`` here.
    """

    topic: Topic
    headers: Mapping[str, Any]
    path: str
    raw: Mapping[str, Any]
    revision: int | None = None
    timestamp: str | None = None
    status: int | None = None
    extra: Mapping[str, Any] | None = None
    fields: str | None = None
    value: Any = field(default=None)
    has_value: bool = False

    def header(self, name: str) -> Any:
        return header(self.headers, name)


def parse_envelope(message: Mapping[str, Any]) -> Envelope:
    """Read a decoded JSON frame as an :class:`Envelope`; else :class:`ProtocolError`."""
    raw_topic, path, headers = message.get("topic"), message.get("path"), message.get("headers", {})
    if not isinstance(raw_topic, str):
        raise ProtocolError("Ditto message has no string 'topic'")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ProtocolError("Ditto message has no 'path' starting with '/'")
    if not isinstance(headers, Mapping):
        raise ProtocolError("Ditto message 'headers' is not an object")
    value = message.get("value", _ABSENT)
    revision, status = message.get("revision"), message.get("status")
    timestamp, extra, fields = message.get("timestamp"), message.get("extra"), message.get("fields")
    return Envelope(
        topic=parse_topic(raw_topic),
        headers=headers,
        path=path,
        raw=message,
        revision=revision if _is_int(revision) else None,
        timestamp=timestamp if isinstance(timestamp, str) else None,
        status=status if _is_int(status) else None,
        extra=extra if isinstance(extra, Mapping) else None,
        fields=fields if isinstance(fields, str) else None,
        value=None if value is _ABSENT else value,
        has_value=value is not _ABSENT,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def header(headers: Mapping[str, Any], name: str) -> Any:
    """A header by case-insensitive name (Ditto headers are case-insensitive, case-preserving)."""
    wanted = name.lower()
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == wanted:
            return value
    return None


@dataclass(frozen=True)
class Control:
    """A text control frame: ``command`` is one of :data:`COMMANDS`, parameters decoded."""

    command: str
    namespaces: tuple[str, ...] = ()
    filter: str | None = None
    extra_fields: str | None = None
    correlation_id: str | None = None
    jwt_token: str | None = None

    @property
    def start(self) -> bool:
        return self.command.startswith("START-")

    @property
    def stream(self) -> str | None:
        """The streaming type (a value of :data:`STREAMS`), ``None`` for ``JWT-TOKEN``."""
        return STREAMS.get(self.command.partition("-SEND-")[2])


def control(
    command: str,
    *,
    namespaces: Sequence[str] = (),
    filter: str | None = None,
    extra_fields: str | None = None,
    correlation_id: str | None = None,
) -> str:
    """A text control message such as ``START-SEND-EVENTS?namespaces=a,b&filter=...``."""
    if command not in COMMANDS or command == JWT_TOKEN:
        raise ValueError(f"{command!r} is not a START-/STOP-SEND command")
    params = []
    if namespaces:
        params.append("namespaces=" + ",".join(quote(n, safe="") for n in namespaces))
    if filter:
        params.append("filter=" + quote(filter, safe=""))
    if extra_fields:
        params.append("extraFields=" + quote(extra_fields, safe=",/"))
    if correlation_id:
        params.append("correlation-id=" + quote(correlation_id, safe=""))
    return command + ("?" + "&".join(params) if params else "")


def jwt_token(token: str) -> str:
    """The in-band token refresh ``JWT-TOKEN?jwtToken=<token>`` (Ditto sends no reply)."""
    return f"{JWT_TOKEN}?jwtToken={quote(token, safe='')}"


def ack(command: str) -> str:
    """The reply Ditto sends once ``command`` (parameters ignored) is in effect."""
    return command.partition("?")[0] + ACK_SUFFIX


def parse_control(text: str) -> Control | None:
    """Read a text frame the way Ditto's gateway does; ``None`` if it is no known command.

    A command is recognised by prefix (``START-SEND-EVENTS`` matches
    ``START-SEND-EVENTSxyz`` too, as in Ditto). Unknown parameters are ignored; a parameter
    without ``=`` has the empty value.
    """
    name = next((c for c in COMMANDS if text.startswith(c)), None)
    if name is None:
        return None
    params: dict[str, str] = {}
    if "?" in text:
        for pair in text.split("?", 1)[1].split("&"):
            key, _, value = pair.partition("=")
            params[unquote_plus(key)] = unquote_plus(value)
    namespaces = tuple(n for n in params.get("namespaces", "").split(",") if n)
    return Control(
        command=name,
        namespaces=namespaces,
        filter=params.get("filter") or None,
        extra_fields=params.get("extraFields") or None,
        correlation_id=params.get("correlation-id") or None,
        jwt_token=params.get("jwtToken") if name == JWT_TOKEN else None,
    )
