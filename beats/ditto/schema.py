"""What the Ditto beat emits (:mod:`beats.ditto.normalize`), for its AsyncAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from beats.ditto.protocol import EVENT_ACTIONS
from common.schema import EventSpec

__all__ = ["DESCRIPTION", "EVENTS", "DittoData", "SnapshotData"]

DESCRIPTION = (
    "Eclipse Ditto twin events and live messages as CloudEvents "
    "(types beats.ditto.twin.<action>, beats.ditto.live.message, ...)."
)


_AS_SENT = "As Ditto sent it, when it did."
_HEADER = "From the headers (case-insensitive), as sent; null when absent."


class DittoData(BaseModel):
    """A Ditto Protocol frame: what Ditto sent, plus what its topic, path and headers say."""

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(description="The Ditto topic, as sent.")
    path: str = Field(description="The resource or message path, as sent.")
    headers: dict[str, Any] = Field(description="The Ditto headers, as sent.")
    value: Any = Field(None, description="The value, as sent (absent when Ditto sent none).")
    revision: Any = Field(None, description=_AS_SENT + " (an integer).")
    timestamp: Any = Field(None, description=_AS_SENT + " (RFC 3339).")
    extra: Any = Field(None, description=_AS_SENT + " (the extra fields).")
    fields: Any = Field(None, description=_AS_SENT)
    status: Any = Field(None, description=_AS_SENT + " (an HTTP status).")
    thing_id: str | None = Field(description="namespace:name; null for a _/_ topic.")
    correlation_id: Any = Field(description=_HEADER)
    originator: Any = Field(description=_HEADER + " (ditto-originator)")
    content_type: Any = Field(description=_HEADER)
    action: str | None = Field(None, description="The topic's action (not for messages).")
    subject: str = Field("", description="Messages: the message subject.")
    direction: Literal["inbox", "outbox"] = Field(
        "inbox", description="Messages: inbox (to the thing) or outbox (from it)."
    )
    feature_id: str = Field("", description="The feature the path addresses.")
    property_path: str = Field("", description="The feature property the path addresses.")
    desired_property_path: str = Field("", description="The desired property addressed.")
    attribute_path: str = Field("", description="The attribute the path addresses.")
    merge_deletion: bool = Field(False, description="A merge with value null (a deletion).")


class SnapshotData(BaseModel):
    """A thing read over Ditto's HTTP API after a reconnect: its state may have changed while
    the beat was away (Ditto replays nothing)."""

    model_config = ConfigDict(extra="forbid")

    thing_id: str = Field(description="namespace:name.")
    reason: str = Field(description="Why it was read (reconnect).")
    revision: int | None = Field(description="The thing's _revision.")
    modified: Any = Field(description="The thing's _modified, as sent.")
    observed_at: str = Field(description="When the beat read it (RFC 3339).")
    thing: dict[str, Any] = Field(description="The Thing JSON, as read.")


def _spec(event_type: str, summary: str, channels: set[str]) -> EventSpec:
    return EventSpec(event_type, DittoData, summary, channels=frozenset(channels))


EVENTS = (
    *(
        _spec(f"beats.ditto.{channel}.{action}", f"A {channel} event: a thing {action}.", {channel})
        for channel in ("twin", "live")
        for action in sorted(EVENT_ACTIONS)
    ),
    _spec("beats.ditto.live.message", "A live message to or from a thing.", {"live"}),
    _spec("beats.ditto.live.response", "A reply to a live message (with a status).", {"live"}),
    _spec("beats.ditto.live.command", "A live command to a thing.", {"live"}),
    _spec("beats.ditto.error", "An error Ditto reported (status >= 400).", {"twin", "live"}),
    EventSpec(
        "beats.ditto.twin.snapshot",
        SnapshotData,
        "A thing's state read after a reconnect.",
        channels=frozenset({"twin"}),
    ),
)
