"""What a beat declares about the events it emits, and the JSON Schemas made from it.

Each beat lists its event types in ``beats/<beat>/schema.py`` as :class:`EventSpec` s, next to
the normaliser that builds the events: the ``type``, a pydantic model of its ``data`` and of its
extension attributes, and the channels it goes to. :mod:`common.asyncapi` turns them into the
AsyncAPI document every service serves as ``/asyncapi.json``.

Every event names its data schema in ``dataschema``: ``urn:works-beats:schema:<type>``
(:func:`dataschema_uri`, set by :func:`common.envelope.new_event`). The schema of ``data`` in
the AsyncAPI document (``components.schemas["<type>"]``) carries that URN as its ``$id``.

The schemas describe the wire: a model field that has a default may be absent (the default is
not part of the schema); in envelopes and extensions (:func:`json_schema` with ``omit_none``) a
field whose default is ``None`` is absent rather than ``null``, as ``CloudEvent.to_json`` writes
it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import PydanticUndefined, core_schema

__all__ = [
    "DATASCHEMA_PREFIX",
    "DeadLetterData",
    "EventSpec",
    "GapSignal",
    "dataschema_uri",
    "dead_letter_spec",
    "json_schema",
]

DATASCHEMA_PREFIX = "urn:works-beats:schema:"
DEAD_LETTER_CHANNEL = "deadletter"


def dataschema_uri(event_type: str) -> str:
    """The ``dataschema`` of events of ``event_type``: the ``$id`` of its data schema."""
    return DATASCHEMA_PREFIX + event_type


_Model = type[BaseModel]


@dataclass(frozen=True)
class EventSpec:
    """One event type a beat emits. ``data``: the model of its ``data`` (a pydantic model or
    any type pydantic can describe); ``extensions``: a model of its extension attributes;
    ``channels``: where it goes (``None``: any of the beat's channels but ``deadletter``);
    ``binary``: the payload may come as ``data_base64`` instead of ``data``."""

    type: str
    data: Any
    summary: str
    channels: frozenset[str] | None = None
    extensions: _Model | None = None
    binary: bool = False


class _WireSchema(GenerateJsonSchema):
    """pydantic's JSON Schema without titles and defaults (a default means: may be absent)."""

    omit_none = False

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        generated = super().model_schema(schema)
        generated.pop("title", None)
        return generated

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        inner = self.generate_inner(schema["schema"])
        if self.omit_none and schema.get("default", PydanticUndefined) is None:
            branches = [b for b in inner.get("anyOf", ()) if b != {"type": "null"}]
            if len(branches) == 1 and len(inner) == 1:
                return dict(branches[0])
        return inner


class _OmitNone(_WireSchema):
    omit_none = True


def json_schema(annotation: Any, *, omit_none: bool = False) -> dict[str, Any]:
    """The JSON Schema (draft-07 compatible, self-contained: no ``$ref``) of a model or type."""
    generator = _OmitNone if omit_none else _WireSchema
    generated = TypeAdapter(annotation).json_schema(
        mode="serialization", schema_generator=generator
    )
    defs = generated.pop("$defs", {})
    inlined: dict[str, Any] = _inline(generated, defs)
    return inlined


def _inline(node: Any, defs: Mapping[str, Any]) -> Any:
    """``node`` with every ``#/$defs/<name>`` reference replaced by the definition."""
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        merged = {**copy.deepcopy(defs[ref.removeprefix("#/$defs/")]), **node}
        del merged["$ref"]
        return _inline(merged, defs)
    return {key: _inline(value, defs) for key, value in node.items()}


class GapSignal(BaseModel):
    """The SSE message ``event: beats.gap`` (not a CloudEvent, no ``id:``): the stream cannot
    continue right after ``requested`` and resumed after ``resumed_after`` instead."""

    model_config = ConfigDict(extra="forbid")

    requested: int = Field(ge=0, description="The position the client asked to resume after.")
    resumed_after: int = Field(ge=0, description="The position the stream resumed after.")
    reason: Literal["expired", "lost", "ahead-of-log"] = Field(
        description="expired: retention dropped the events; lost: the log lost them; "
        "ahead-of-log: the position is beyond the log's head (the log was reset)."
    )


class DeadLetterData(BaseModel):
    """An input the beat could not normalise, kept with the reason (the ``deadletter``
    channel): the raw input (its first 64 KiB) as text when it is UTF-8, else as base64."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(description="Why the input was rejected.")
    size: int = Field(ge=0, description="The size of the whole input in bytes.")
    sha256: str = Field(pattern="^[0-9a-f]{64}$", description="SHA-256 of the whole input.")
    truncated: bool = Field(description="Whether raw / raw_base64 holds only the beginning.")
    context: dict[str, Any] = Field(
        description="What the source knew about the input (topic, headers, ...), or "
        "context_error when that could not be encoded."
    )
    raw: str = Field("", description="The input (or its beginning) as UTF-8 text.")
    raw_base64: str = Field("", description="The input (or its beginning), base64.")


def _const_extensions(beat: str, values: Mapping[str, Any]) -> type[BaseModel] | None:
    if not values:
        return None
    fields = {name: (Literal[value], Field(description="Set on every dead letter of this beat."))
              for name, value in values.items()}  # fmt: skip
    model: type[BaseModel] = create_model(f"{beat}DeadLetterExtensions", **fields)  # type: ignore[call-overload]
    return model


def dead_letter_spec(beat: str, extensions: Mapping[str, Any] | None = None) -> EventSpec:
    """The kernel's ``beats.<beat>.deadletter`` events (``extensions``: the beat's fixed
    dead-letter extensions, such as OpenCTI's ``tlp: red``)."""
    return EventSpec(
        type=f"beats.{beat}.deadletter",
        data=DeadLetterData,
        summary="An input the beat rejected, with the reason.",
        channels=frozenset({DEAD_LETTER_CHANNEL}),
        extensions=_const_extensions(beat, extensions or {}),
    )
