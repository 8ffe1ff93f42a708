"""The OpenCTI live stream's frames, as data: what one SSE frame is, and its Redis-stream id.

OpenCTI (``sseMiddleware.js``, ``createSseChannel().sendEvent``) writes each frame as::

    id: <redis stream id>      (absent on ``connected``)
    event: <kind>
    data: <JSON.stringify(payload)>   (always one line)

Kinds: ``connected`` (first, no id; stream info), ``heartbeat`` (id = the last stream id the
server read; data = that id's time as a JSON string), and the data kinds ``create``,
``update``, ``delete``, ``merge`` (data = ``{version, type, scope, message, origin, data:
<STIX 2.1 object>, context, event_id?}``). OpenCTI 4.x also sent ``sync``.

Stream ids are Redis stream ids ``<epoch-ms>-<seq>``, ordered by (ms, seq). They are *not*
unique per frame: a live stream sends an event's dependencies (markings, authors, relationship
ends) as extra ``create`` frames carrying the triggering event's id, and recovered objects get
``<updated_at ms>-0``. Resuming from an id (``Last-Event-ID`` / ``from``) means "after it".

Parsing the wire format is left to ``httpx-sse`` on the client side; :meth:`Frame.from_sse`
bridges its ``ServerSentEvent``. :meth:`Frame.encode` writes the wire format (the emulator).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

__all__ = [
    "BEGINNING",
    "CONTROL_KINDS",
    "DATA_KINDS",
    "Frame",
    "SseLike",
    "StreamId",
    "start_position",
    "trimmed_past",
]

DATA_KINDS = frozenset({"create", "update", "delete", "merge"})
CONTROL_KINDS = frozenset({"connected", "heartbeat", "sync"})
_ID = re.compile(r"(\d{1,15})-(\d{1,15})")


@dataclass(frozen=True, order=True)
class StreamId:
    """A Redis stream id ``<ms>-<seq>``; instances order as Redis orders them."""

    millis: int
    seq: int = 0

    @classmethod
    def parse(cls, text: str) -> StreamId:
        """``'1700000000000-0'`` → ``StreamId(1700000000000, 0)``; ``ValueError`` otherwise."""
        match = _ID.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"not a stream id: {text!r}")
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def at(cls, when: datetime, seq: int = 0) -> StreamId:
        """The id at a time (OpenCTI's ``streamEventId(date, index)``)."""
        return cls(int(when.timestamp() * 1000), seq)

    def time(self) -> datetime:
        return datetime.fromtimestamp(self.millis / 1000, tz=UTC)

    def iso(self) -> str:
        """The id's time as OpenCTI writes it in heartbeats: ``2023-05-31T09:04:17.951Z``."""
        return self.time().isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def __str__(self) -> str:
        return f"{self.millis}-{self.seq}"


BEGINNING = StreamId(0, 0)
"""``0-0``: before every frame of the stream."""


def start_position(value: str | None) -> StreamId | None:
    """Where a ``from`` / ``Last-Event-ID`` value starts, as OpenCTI reads it
    (``convertParameterToStreamId``): ``0`` or ``0-0`` is the beginning, ``<ms>-<seq>`` an id,
    any ISO date ``<its ms>-0``; ``None`` for absent or unreadable (OpenCTI: "from now")."""
    if not value:
        return None
    if value in ("0", "0-0"):
        return BEGINNING
    try:
        return StreamId.parse(value)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return StreamId.at(when if when.tzinfo else when.replace(tzinfo=UTC))


def trimmed_past(connected: str, resume: str | None) -> StreamId | None:
    """The stream's first kept id when retention (``redis:trimming``) has dropped the entry
    ``resume`` names, from a ``connected`` frame's data (``firstEventId``); else ``None``.
    Entries between the two may be gone: the consumer cannot tell how many."""
    position = start_position(resume)
    try:
        info = json.loads(connected)
        first = StreamId.parse(str(info["firstEventId"]))
    except (ValueError, TypeError, KeyError):
        return None
    if position is None or position == BEGINNING or first == BEGINNING:
        return None
    return first if first > position else None


class SseLike(Protocol):
    """What :meth:`Frame.from_sse` needs (``httpx_sse.ServerSentEvent`` has it)."""

    @property
    def event(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def data(self) -> str: ...


@dataclass(frozen=True)
class Frame:
    """One SSE frame of the stream: its event name, its ``id:`` ('' when absent), its data
    (the raw ``data:`` text; JSON for every kind OpenCTI sends)."""

    kind: str
    id: str
    data: str
    oversize: int = 0
    """When a line of the frame was longer than the reader keeps: the size of its value (the
    frame's ``data`` then holds only about its first 64 KiB); 0 otherwise."""
    digest: str = ""
    """With ``oversize``: the SHA-256 (hex) of that whole value, read as it passed."""

    @classmethod
    def from_sse(cls, sse: SseLike) -> Frame:
        return cls(sse.event, sse.id, sse.data)

    @property
    def stream_id(self) -> StreamId | None:
        """The ``id:`` as a :class:`StreamId`, or ``None`` when absent or not a stream id."""
        try:
            return StreamId.parse(self.id)
        except ValueError:
            return None

    def encode(self) -> bytes:
        """The frame on the wire, as OpenCTI writes it. ``data`` must be one line; bytes that
        are not UTF-8 can be sent as ``surrogateescape`` (the emulator's raw frames, a test
        switch: OpenCTI writes UTF-8)."""
        if "\n" in self.data or "\r" in self.data:
            raise ValueError("SSE data of an OpenCTI frame is one line")
        head = f"id: {self.id}\n" if self.id else ""
        return f"{head}event: {self.kind}\ndata: {self.data}\n\n".encode("utf-8", "surrogateescape")
