"""What the FIWARE beat emits (:mod:`beats.fiware.normalize`), for its AsyncAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from common.schema import EventSpec

__all__ = ["DESCRIPTION", "EVENTS", "EntityData", "EntityStatus", "RawData"]

DESCRIPTION = (
    "Orion (NGSI v2) and NGSI-LD notifications as CloudEvents "
    "(type beats.fiware.entity); POST /notify, POST /writeback."
)


_HEADER = "From the request headers; null when absent."
_ATTRIBUTE = (
    "Attribute name → the shared attribute shape (beats.fiware.shape): type, value and/or "
    "object, metadata, the promoted annotations (unitCode, observedAt, datasetId, "
    "previousValue, actionType, createdAt, modifiedAt, lang) and, for an LD "
    "multi-attribute, instances."
)


class EntityStatus(BaseModel):
    """An NGSIv1 context element's ``statusCode``."""

    model_config = ConfigDict(extra="forbid")

    code: Any = Field(description="The status code (an integer when it is one).")
    reason: Any = Field(description="The reasonPhrase, as sent.")
    details: Any = Field(None, description="The details, as sent, when present.")


class EntityData(BaseModel):
    """One entity of an Orion (NGSI v2, NGSIv1) or NGSI-LD notification, in one shape for every
    API, with the entity and the rest of the notification as sent."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(description="The entity id; null for a values row.")
    type: Any = Field(description="The entity type, as sent.")
    ngsi: Literal["v2", "ld", "v1"] = Field(description="The API of the notification.")
    format: str = Field(description="normalized, keyValues, values, concise, legacy, ...")
    tenant: str | None = Field(description="Fiware-Service / NGSILD-Tenant. " + _HEADER)
    service_path: str | None = Field(description="Fiware-ServicePath (v2, v1; / if absent).")
    subscription_id: str | None = Field(description="The notification's subscriptionId.")
    notified_at: str | None = Field(description="NGSI-LD notifiedAt.")
    notification_id: str | None = Field(description="NGSI-LD notification id.")
    correlator: str | None = Field(description="Fiware-Correlator. " + _HEADER)
    context: Any = Field(description="NGSI-LD @context (body, entity or Link header).")
    alteration_type: str | None = Field(description="NGSI v2 alterationType.")
    geometry: dict[str, Any] | None = Field(description="A GeoJSON Feature's geometry.")
    status: EntityStatus | None = Field(description="An NGSIv1 element's statusCode.")
    attributes: dict[str, dict[str, Any]] = Field(description=_ATTRIBUTE)
    values: dict[str, Any] = Field(description="Attribute name → its value or target.")
    relationships: dict[str, Any] = Field(description="Relationship name → its target.")
    geo: dict[str, Any] = Field(description="Attribute name → its GeoJSON geometry.")
    entity: Any = Field(description="The entity (Feature, context element, row) as sent.")
    notification: dict[str, Any] = Field(description="The notification's other members.")


class RawData(BaseModel):
    """A custom (httpCustom) notification, losslessly: ``text`` or ``base64``."""

    model_config = ConfigDict(extra="forbid")

    content_type: str = Field(description="The request's Content-Type (text/plain if none).")
    text: str = Field("", description="The body as UTF-8 text, exactly as received.")
    base64: str = Field("", description="The body, base64, when it is not UTF-8.")
    json_: Any = Field(None, alias="json", description="The text parsed, when it is JSON.")
    tenant: str | None = Field(description="Fiware-Service / NGSILD-Tenant. " + _HEADER)
    service_path: str = Field(description="Fiware-ServicePath (/ when absent).")
    correlator: str | None = Field(description="Fiware-Correlator. " + _HEADER)


EVENTS = (
    EventSpec(
        "beats.fiware.entity",
        EntityData,
        "One entity of a notification (subject: its id).",
        channels=frozenset({"entities"}),
    ),
    EventSpec(
        "beats.fiware.raw",
        RawData,
        "A custom payload notification (Ngsiv2-AttrsFormat: custom).",
        channels=frozenset({"raw"}),
    ),
)
