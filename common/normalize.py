"""What every normaliser shares: the rejection type and helpers for total, pure functions.

A normaliser is a pure function from one raw input to zero or more events. It never performs I/O
and never raises anything but :class:`Rejected`, whose ``reason`` is shown to the sender (HTTP 4xx
body) and kept with the raw input in the dead-letter channel.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["Rejected", "parse_time"]


class Rejected(ValueError):
    """The input cannot be normalised. ``reason`` is a short, human-readable explanation."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 / ISO 8601 timestamp or epoch milliseconds as an aware datetime, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
