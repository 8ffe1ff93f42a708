"""The one entity shape shared by NGSI v2 and NGSI-LD notifications. Pure helpers, no I/O.

An *attribute* in that shape is a dict with

* ``type`` — the v2 attribute type or the LD attribute type (``Property``, ``Relationship``,
  ``GeoProperty``, ``LanguageProperty``, …); ``None`` when the format drops types
  (``keyValues``);
* ``value`` (properties) and/or ``object`` (relationships; a v2 attribute of type
  ``Relationship`` carries both);
* ``metadata`` — v2 metadata exactly as sent, or the LD sub-properties that are not promoted
  (each in this same shape);
* the well-known annotations promoted to the top whatever the API: ``unitCode``,
  ``observedAt`` (v2 ``TimeInstant`` metadata too), ``datasetId``, ``previousValue`` (LD
  ``previousObject`` too), ``actionType``, ``createdAt`` / ``modifiedAt`` (v2 ``dateCreated`` /
  ``dateModified`` metadata), ``lang``;
* ``instances`` — only for an LD multi-attribute (several ``datasetId``): every instance in this
  shape; the attribute's own ``value``/``object`` are those of the default instance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from common.normalize import parse_time

__all__ = [
    "GEOJSON_TYPES",
    "entity_views",
    "flat",
    "is_geojson",
    "latest_time",
]

GEOJSON_TYPES = frozenset(
    {
        "Point",
        "MultiPoint",
        "LineString",
        "MultiLineString",
        "Polygon",
        "MultiPolygon",
        "GeometryCollection",
    }
)
_GEO_ATTRIBUTE_TYPES = frozenset({"GeoProperty", "geo:json"})


def is_geojson(value: Any) -> bool:
    """A GeoJSON geometry: a known ``type`` with ``coordinates`` (or ``geometries``)."""
    if not isinstance(value, dict):
        return False
    kind = value.get("type")
    if not isinstance(kind, str) or kind not in GEOJSON_TYPES:
        return False
    return "coordinates" in value or "geometries" in value


def flat(attribute: Mapping[str, Any]) -> Any:
    """The analytics view of one attribute: the relationship target, else the value."""
    if "object" in attribute:
        return attribute["object"]
    return attribute.get("value")


def _is_relationship(attribute: Mapping[str, Any]) -> bool:
    return "object" in attribute


def _geo(attribute: Mapping[str, Any]) -> Any:
    if "geojson" in attribute:  # v2 geo:point / geo:line / geo:box / geo:polygon, converted
        return attribute["geojson"]
    value = attribute.get("value")
    kind = attribute.get("type")
    if isinstance(kind, str) and kind in _GEO_ATTRIBUTE_TYPES and isinstance(value, dict):
        return value
    return value if is_geojson(value) else None


def entity_views(attributes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``values`` (name → value), ``relationships`` (name → target), ``geo`` (name → GeoJSON)."""
    geo = {name: _geo(attribute) for name, attribute in attributes.items()}
    return {
        "values": {name: flat(attribute) for name, attribute in attributes.items()},
        "relationships": {
            name: attribute["object"]
            for name, attribute in attributes.items()
            if _is_relationship(attribute)
        },
        "geo": {name: shape for name, shape in geo.items() if shape is not None},
    }


def _newest(stamps: Iterable[Any]) -> datetime | None:
    parsed = (parse_time(stamp) for stamp in stamps)
    return max((when for when in parsed if when is not None), default=None)


def latest_time(
    notified_at: Any, modified_at: Any, attributes: Mapping[str, Mapping[str, Any]]
) -> datetime | None:
    """``notifiedAt``, else the entity's modification time, else the newest attribute
    ``modifiedAt``, else the newest ``observedAt``."""
    for stamp in (notified_at, modified_at):
        when = parse_time(stamp)
        if when is not None:
            return when
    modified = _newest(a.get("modifiedAt") for a in attributes.values())
    if modified is not None:
        return modified
    return _newest(a.get("observedAt") for a in attributes.values())
