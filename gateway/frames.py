"""What travels from a beat through the gateway to a client: one SSE message as a :class:`Frame`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from httpx_sse import ServerSentEvent

__all__ = ["GAP_EVENT", "Frame", "Gap"]

GAP_EVENT = "beats.gap"


@dataclass(frozen=True, slots=True)
class Gap:
    """A beat's ``beats.gap`` signal: events after ``requested`` are not (or no longer) in its
    log; the stream resumed after ``resumed_after``."""

    requested: int
    resumed_after: int
    reason: str


@dataclass(slots=True)
class Frame:
    """One event (``seq`` set) or one gap signal (``gap`` set), rendered lazily and shared by
    every client of an upstream: the JSON is parsed at most once, for filters."""

    seq: int | None
    type: str
    data: str
    gap: Gap | None = None
    _event: dict[str, Any] | None = field(default=None, repr=False)
    _wire: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_sse(cls, sse: ServerSentEvent) -> Frame | None:
        """The frame of a message from a beat (``None`` for retry-only or empty messages);
        ``ValueError`` for a malformed one."""
        if sse.event == GAP_EVENT:
            raw = json.loads(sse.data)
            gap = Gap(int(raw["requested"]), int(raw["resumed_after"]), str(raw["reason"]))
            return cls(None, GAP_EVENT, sse.data, gap)
        if not sse.data or not sse.id:
            return None
        return cls(int(sse.id), sse.event, sse.data)

    @classmethod
    def marker(cls, seq: int) -> Frame:
        """A position with no event (a record a replay skipped): moves a client past ``seq``
        and is never sent."""
        return cls(seq, "", "")

    @property
    def size(self) -> int:
        """The bytes this frame may hold, for the byte bounds: its text and its wire form
        (rendered once, shared by every client); the parsed JSON of a filtered stream comes
        on top."""
        return 2 * len(self.data) + len(self.type) + 64

    def event(self) -> dict[str, Any]:
        """The CloudEvent as a JSON object (parsed once)."""
        if self._event is None:
            parsed = json.loads(self.data)
            self._event = parsed if isinstance(parsed, dict) else {}
        return self._event

    def wire(self) -> bytes:
        """The SSE message with the beat's sequence as ``id:`` (gaps carry no id)."""
        if self._wire is None:
            head = "" if self.seq is None else f"id: {self.seq}\n"
            self._wire = f"{head}event: {self.type}\ndata: {self.data}\n\n".encode()
        return self._wire

    def wire_with_id(self, event_id: str) -> bytes:
        """The SSE message with another ``id:`` (the merged stream's position vector)."""
        return f"id: {event_id}\nevent: {self.type}\ndata: {self.data}\n\n".encode()
