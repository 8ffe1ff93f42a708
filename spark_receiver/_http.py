"""Reading a beat's SSE stream with httpx-sse, synchronously (driver thread or executor).

Resume positions are sequences: ``Last-Event-ID: N`` asks for every event after N. A
``beats.gap`` event means the beat no longer (or not yet) holds what was asked for; it is raised
as :class:`GapError` unless the caller chose to continue past it.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import connect_sse

__all__ = ["GAP_EVENT", "Backoff", "GapError", "SseRecord", "stream_after"]

GAP_EVENT = "beats.gap"
_log = logging.getLogger(__name__)


class GapError(RuntimeError):
    """The beat cannot replay after the requested sequence (retention, or a reset log)."""

    def __init__(self, gap: dict[str, Any]) -> None:
        super().__init__(
            f"beats.gap: events after {gap.get('requested')} are not in the beat's log "
            f"(resumed after {gap.get('resumed_after')}, reason {gap.get('reason')!r})"
        )
        self.gap = gap


@dataclass(frozen=True)
class SseRecord:
    sequence: int
    event: dict[str, Any]


@dataclass
class Backoff:
    """Exponential backoff with full jitter (the package cannot import the repo's kernel)."""

    min_delay: float = 0.2
    max_delay: float = 10.0
    attempt: int = 0

    def next(self) -> float:
        ceiling = min(self.max_delay, self.min_delay * 2**self.attempt)
        self.attempt += 1
        return random.uniform(self.min_delay / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


def headers(token: str | None, after: int) -> dict[str, str]:
    result = {"Last-Event-ID": str(after), "Accept": "text/event-stream"}
    if token:
        result["Authorization"] = f"Bearer {token}"
    return result


def stream_after(
    client: httpx.Client, url: str, *, after: int, token: str | None, on_gap: str = "fail"
) -> Iterator[SseRecord]:
    """Events with a sequence greater than ``after``, until the server ends the stream."""
    with connect_sse(client, "GET", url, headers=headers(token, after)) as source:
        response = source.response
        if response.status_code != 200:
            response.read()
            response.raise_for_status()
        for sse in source.iter_sse():
            if sse.event == GAP_EVENT:
                gap = json.loads(sse.data)
                if on_gap == "fail":
                    raise GapError(gap)
                _log.warning("beats source continues past a gap: %s", gap)
                continue
            if not sse.id or not sse.data:
                continue
            sequence = int(sse.id)
            if sequence > after:
                after = sequence
                yield SseRecord(sequence, json.loads(sse.data))
