"""NGSI v2 entities (as Orion notifies them) in the shared shape of :mod:`beats.fiware.shape`.

Orion's notification formats (``doc/manuals/orion-api.md`` § Notification Messages):
``normalized`` and ``simplifiedNormalized`` carry ``{"type", "value", "metadata"}`` per attribute,
``keyValues`` and ``simplifiedKeyValues`` bare values, ``values`` a bare list per entity. Orion's
geo types other than ``geo:json`` (``geo:point`` ``"lat, lon"``, ``geo:line``, ``geo:box``,
``geo:polygon``) are converted to GeoJSON (longitude first) for the ``geo`` view.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from beats.fiware.shape import entity_views

__all__ = ["KEY_VALUE_FORMATS", "V2_FORMATS", "guess_format", "v2_entity", "v2_values_row"]

V2_FORMATS = frozenset(
    {"normalized", "keyValues", "values", "simplifiedNormalized", "simplifiedKeyValues"}
)
KEY_VALUE_FORMATS = frozenset({"keyValues", "simplifiedKeyValues"})
_ENTITY_MEMBERS = frozenset({"id", "type"})
_BUILTIN_NOT_VALUES = frozenset({"alterationType", "servicePath"})
_PROMOTED_METADATA = {
    "unitCode": "unitCode",
    "observedAt": "observedAt",
    "TimeInstant": "observedAt",
    "previousValue": "previousValue",
    "actionType": "actionType",
    "dateCreated": "createdAt",
    "dateModified": "modifiedAt",
}


def guess_format(entity: Any) -> str:
    """``normalized`` when every attribute looks like ``{"value": …}``, else ``keyValues``."""
    if isinstance(entity, list):
        return "values"
    if not isinstance(entity, dict):
        return "normalized"
    attributes = [v for k, v in entity.items() if k not in _ENTITY_MEMBERS]
    if all(isinstance(a, dict) and ("value" in a or "type" in a) for a in attributes):
        return "normalized"
    return "keyValues"


def _point(text: Any) -> list[float] | None:
    """Orion's ``"lat, lon"`` as a GeoJSON position ``[lon, lat]``."""
    if not isinstance(text, str):
        return None
    parts = text.split(",")
    if len(parts) != 2:
        return None
    try:
        lat, lon = (float(part) for part in parts)
    except ValueError:
        return None
    return [lon, lat]


def _points(value: Any) -> list[list[float]] | None:
    if not isinstance(value, list):
        return None
    points = [_point(item) for item in value]
    return None if any(p is None for p in points) else [p for p in points if p is not None]


def _box(points: list[list[float]]) -> dict[str, Any] | None:
    if len(points) != 2:
        return None
    (lon1, lat1), (lon2, lat2) = points
    ring = [[lon1, lat1], [lon2, lat1], [lon2, lat2], [lon1, lat2], [lon1, lat1]]
    return {"type": "Polygon", "coordinates": [ring]}


def _geojson(attr_type: Any, value: Any) -> dict[str, Any] | None:
    if attr_type == "geo:point":
        point = _point(value)
        return None if point is None else {"type": "Point", "coordinates": point}
    points = _points(value) if attr_type in ("geo:line", "geo:box", "geo:polygon") else None
    if not points:
        return None
    if attr_type == "geo:line":
        return {"type": "LineString", "coordinates": points}
    if attr_type == "geo:box":
        return _box(points)
    return {"type": "Polygon", "coordinates": [points]}


def _promoted(metadata: Mapping[str, Any]) -> dict[str, Any]:
    promoted: dict[str, Any] = {}
    for name, target in _PROMOTED_METADATA.items():
        if name in metadata and target not in promoted:
            entry = metadata[name]
            promoted[target] = entry.get("value") if isinstance(entry, dict) else entry
    return promoted


def _attribute(raw: Any, key_values: bool) -> dict[str, Any]:
    if key_values or not isinstance(raw, dict):
        return {"type": None, "value": raw, "metadata": {}}
    attribute: dict[str, Any] = {"type": raw.get("type"), "value": raw.get("value")}
    metadata = raw.get("metadata")
    attribute["metadata"] = metadata if isinstance(metadata, dict) else {}
    if raw.get("type") == "Relationship":
        attribute["object"] = raw.get("value")
    geojson = _geojson(raw.get("type"), raw.get("value"))
    if geojson is not None:
        attribute["geojson"] = geojson
    attribute.update(_promoted(attribute["metadata"]))
    return attribute


def v2_entity(entity: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    """One v2 entity (``id`` already checked to be a string) in the shared shape."""
    key_values = fmt in KEY_VALUE_FORMATS
    attributes = {
        name: _attribute(raw, key_values)
        for name, raw in entity.items()
        if name not in _ENTITY_MEMBERS
    }
    views = entity_views(
        {n: a for n, a in attributes.items() if n not in _BUILTIN_NOT_VALUES},
    )
    alteration = attributes.get("alterationType", {}).get("value")
    modified = attributes.get("dateModified", {}).get("value")
    for attribute in attributes.values():
        attribute.pop("geojson", None)
    return {
        "id": entity["id"],
        "type": entity.get("type"),
        "alteration_type": alteration if isinstance(alteration, str) else None,
        "modified_at": modified,
        "attributes": attributes,
        **views,
    }


def v2_values_row(row: Sequence[Any], names: Sequence[str]) -> dict[str, Any]:
    """A ``values`` notification row: attribute names come from the subscription (given by the
    caller, in ``notification.attrs`` order); ``attr0``, ``attr1``, … when unknown."""
    labels = [names[i] if i < len(names) else f"attr{i}" for i in range(len(row))]
    attributes = {
        label: {"type": None, "value": value, "metadata": {}}
        for label, value in zip(labels, row, strict=True)
    }
    return {
        "id": None,
        "type": None,
        "alteration_type": None,
        "modified_at": None,
        "attributes": attributes,
        **entity_views(attributes),
    }
