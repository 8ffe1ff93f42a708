"""What the OpenCTI beat emits (:mod:`beats.opencti.normalize`), for its AsyncAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from beats.opencti.frames import DATA_KINDS
from common.schema import EventSpec

__all__ = [
    "DEAD_LETTER_EXTENSIONS",
    "DESCRIPTION",
    "EVENTS",
    "OpenctiData",
    "OpenctiExtensions",
    "StixObject",
]

DESCRIPTION = (
    "The OpenCTI live stream (STIX 2.1) as CloudEvents "
    "(types beats.opencti.create|update|delete|merge)."
)
DEAD_LETTER_EXTENSIONS = {"tlp": "red"}
"""On every dead letter: a rejected frame's content is unvetted."""


Tlp = Literal["clear", "green", "amber", "amber+strict", "red"]

_AS_SENT = "The frame's member, as sent."


class StixObject(BaseModel):
    """The STIX 2.1 object, whole, as the stream sent it."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, description="The STIX id (the event's subject).")
    type: str = Field(min_length=1, description="The STIX type (the stixtype extension).")


class OpenctiData(BaseModel):
    """One live-stream frame: the STIX object, OpenCTI's extension lifted into flat fields, the
    frame's metadata and, for changes, the patches and the object before the change."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["create", "update", "delete", "merge"] = Field(description="The SSE event.")
    recorded_kind: Any = Field(description="The frame's own type. " + _AS_SENT)
    stream_id: str | None = Field(description="The stream position (SSE id) of the frame.")
    event_id: Any = Field(description="The live stream's own event_id (not stable).")
    message: Any = Field(description="OpenCTI's description of the change. " + _AS_SENT)
    origin_user_id: Any = Field(description="origin.user_id, when origin has one.")
    origin_referer: Any = Field(description="origin.referer (dependencies, init, ...).")
    origin: Any = Field(description="The origin. " + _AS_SENT)
    version: Any = Field(description=_AS_SENT)
    scope: Any = Field(description=_AS_SENT)
    opencti: dict[str, Any] = Field(
        description="The OpenCTI extension's fields, flat (its type as entity_type)."
    )
    stix: StixObject
    context: Any = Field(description="The frame's context. " + _AS_SENT)
    patch: Any = Field(None, description="RFC 6902 patch (updates, merges).")
    reverse_patch: Any = Field(None, description="RFC 6902 patch back to the previous object.")
    previous: dict[str, Any] | None = Field(
        None, description="The object before the change (null when it cannot be computed)."
    )
    previous_error: str = Field("", description="Why previous could not be computed.")


class OpenctiExtensions(BaseModel):
    """The marking and the STIX type, for filtering without reading ``data``."""

    model_config = ConfigDict(extra="forbid")

    tlp: Tlp = Field(description="The most restrictive TLP of everything the event carries.")
    stixtype: str = Field(description="The STIX type of the object.")


EVENTS = tuple(
    EventSpec(
        f"beats.opencti.{kind}",
        OpenctiData,
        f"A {kind} frame of the live stream (subject: the STIX id).",
        extensions=OpenctiExtensions,
    )
    for kind in sorted(DATA_KINDS)
)
