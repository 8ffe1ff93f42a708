"""What a Kafka record becomes in the gateway: a frame, a gap signal, or a duplicate to drop."""

from __future__ import annotations

import json
from collections import deque

from aiokafka import ConsumerRecord

from gateway.frames import GAP_EVENT, Frame, Gap

__all__ = ["RecentIds", "gap_frame", "record_frame"]


def record_frame(record: ConsumerRecord[bytes, bytes]) -> Frame | None:
    """The frame of a record holding a structured CloudEvent (``None`` for anything else)."""
    try:
        text = (record.value or b"").decode()
        event = json.loads(text)
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return None
    frame = Frame(record.offset, event["type"], text)
    frame._event = event
    return frame


def gap_frame(label: str, requested: int, resumed_after: int, reason: str) -> Frame:
    gap = Gap(requested, resumed_after, reason)
    body = {"stream": label, "requested": requested, "resumed_after": resumed_after,
            "reason": reason}  # fmt: skip
    return Frame(None, GAP_EVENT, json.dumps(body), gap)


class RecentIds:
    """The CloudEvent ids of the last ``size`` events (``size`` 0: remembers nothing)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._order: deque[str] = deque()
        self._seen: set[str] = set()

    def seen(self, frame: Frame) -> bool:
        """Whether ``frame``'s id is among the recent ones; remembers it if not."""
        if self.size == 0:
            return False
        event_id = frame.event().get("id")
        if not isinstance(event_id, str):
            return False
        if event_id in self._seen:
            return True
        self._order.append(event_id)
        self._seen.add(event_id)
        if len(self._order) > self.size:
            self._seen.discard(self._order.popleft())
        return False

    def remember(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Remember the id of a record a client already has (not sent, not counted)."""
        frame = record_frame(record)
        if frame is not None:
            self.seen(frame)
