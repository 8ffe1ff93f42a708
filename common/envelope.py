"""The CloudEvents 1.0 envelope every beat emits.

Events are immutable. A normaliser builds one with :func:`new_event`; the event log assigns
``sequence`` at the commit point (:meth:`CloudEvent.with_sequence`). The JSON form is the
CloudEvents JSON event format (structured mode), with the extensions ``beat``, ``sequence`` and
``partitionkey`` plus any beat-specific ones (for example ``tlp``). ``dataschema`` names the JSON
Schema of ``data`` (:mod:`common.schema`).

``sequence`` is an integer here (the SSE id), not the string-typed CloudEvents "sequence"
extension; consumers compare it numerically.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from common.jsonsafe import NotJson, Unrepresentable, loads
from common.normalize import Rejected
from common.schema import dataschema_uri

__all__ = ["CloudEvent", "new_event", "payload_to_data"]

_JSON = "application/json"


class CloudEvent(BaseModel):
    """A CloudEvent with the Works Beats extensions. Unknown extensions are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"] = Field("1.0", description="CloudEvents 1.0.")
    id: str = Field(min_length=1, description="Unique per source; stable across redelivery "
                    "where the source has a natural id (consumers deduplicate on it).")  # fmt: skip
    source: str = Field(min_length=1, description="The upstream (broker, stream URL).")
    type: str = Field(min_length=1, description="The event type, beats.<beat>.<kind>.")
    subject: str | None = Field(None, description="What the event is about (topic, id).")
    time: datetime | None = Field(None, description="When it happened (RFC 3339).")
    datacontenttype: str | None = Field(_JSON, description="The media type of data.")
    dataschema: str | None = Field(
        None, description="The data's JSON Schema: the $id of a schema in /asyncapi.json."
    )
    data: Any = None
    data_base64: str | None = Field(None, description="Binary data, base64 (no data then).")
    beat: str = Field(min_length=1, description="Extension: the beat that emitted it.")
    sequence: int | None = Field(
        None, description="Extension: the position in the beat's log (the SSE id)."
    )
    partitionkey: str = Field(
        min_length=1, description="Extension: the Kafka key; events with one key stay in order."
    )
    channel: str = Field(default="default", exclude=True)
    """Routing only (SSE path, Kafka topic); not part of the serialised event."""

    @field_validator("time")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    def with_sequence(self, sequence: int) -> CloudEvent:
        return self.model_copy(update={"sequence": sequence})

    def to_json_with_sequence(self, sequence: int) -> bytes:
        """``with_sequence(sequence).to_json()``, without copying the model (hot path)."""
        if self.sequence is not None:
            return self.with_sequence(sequence).to_json()
        return b'%s,"sequence":%d}' % (self.to_json()[:-1], sequence)

    def to_json(self) -> bytes:
        """Structured-mode JSON, one line, without unset optional attributes."""
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_json(cls, raw: str | bytes, *, channel: str = "default") -> CloudEvent:
        event = cls.model_validate_json(raw)
        return event.model_copy(update={"channel": channel})


def payload_to_data(
    payload: bytes, content_type: str | None = None, *, require_json: bool = False
) -> dict[str, Any]:
    """Map raw bytes to the CloudEvent data fields, losslessly.

    JSON stays JSON (``data``), other UTF-8 text becomes a string, anything else goes to
    ``data_base64``. JSON that cannot be carried as JSON (:mod:`common.jsonsafe`: a lone
    surrogate, a number beyond a double, nesting too deep) is kept byte for byte in
    ``data_base64``, with the reason in the ``datanote`` extension. ``require_json``: the
    payload was declared JSON, and text that is not JSON is :class:`Rejected`. The returned
    dict holds ``data`` or ``data_base64``, ``datacontenttype`` and maybe ``datanote``.
    """
    declared_json = content_type is None or "json" in content_type
    if declared_json and (require_json or payload.strip()):
        try:
            return {
                "data": loads(payload, what="payload"),
                "datacontenttype": content_type or _JSON,
            }
        except Unrepresentable as exc:
            return {
                "data_base64": base64.b64encode(payload).decode("ascii"),
                "datacontenttype": content_type or _JSON,
                "datanote": f"kept as base64: {exc.reason}",
            }
        except NotJson as exc:
            if require_json:
                raise Rejected(
                    f"content type {content_type} but the payload is not valid JSON: {exc.reason}"
                ) from None
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return {
            "data_base64": base64.b64encode(payload).decode("ascii"),
            "datacontenttype": content_type or "application/octet-stream",
        }
    return {"data": text, "datacontenttype": content_type or "text/plain; charset=utf-8"}


def new_event(
    *,
    beat: str,
    type: str,
    source: str,
    channel: str,
    partitionkey: str,
    subject: str | None = None,
    time: datetime | None = None,
    data: Any = None,
    id: str | None = None,
    datacontenttype: str | None = _JSON,
    data_base64: str | None = None,
    dataschema: str | None = None,
    **extensions: Any,
) -> CloudEvent:
    """Build an event. ``id`` defaults to a random UUID; pass a natural id where the source has
    one that is stable across redelivery (it lets the log drop redelivered duplicates).
    ``dataschema`` defaults to the type's schema (:func:`common.schema.dataschema_uri`)."""
    return CloudEvent(
        id=id or str(uuid.uuid4()),
        source=source,
        type=type,
        subject=subject,
        time=time,
        datacontenttype=datacontenttype,
        dataschema=dataschema or dataschema_uri(type),
        data=data,
        data_base64=data_base64,
        beat=beat,
        partitionkey=partitionkey,
        channel=channel,
        **extensions,
    )
