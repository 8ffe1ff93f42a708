"""NGSI-LD entities (as Orion-LD, Scorpio or Stellio notify them) in the shared shape of
:mod:`beats.fiware.shape`.

Formats: ``normalized`` (every attribute typed), ``keyValues`` (Orion-LD calls it
``Simplified``: bare values, relationships indistinguishable from text) and ``concise``
(Orion-LD ``ngsild_new_notification_with_concise.test``: a property without sub-properties is its
bare value, a relationship ``{"object": …}``, a property with sub-properties ``{"value": …, …}``,
a GeoProperty its bare GeoJSON, a LanguageProperty ``{"languageMap": …}``). A list of attribute
objects is a multi-attribute (instances told apart by ``datasetId``).

GeoJSON notifications (``endpoint.accept: application/geo+json``; Orion-LD's
``ngsild_geojson-format-in-notifications*.test`` and ``kjGeojsonEntityTransform.cpp``): ``data``
is a ``FeatureCollection``; each ``Feature`` is one entity: ``id``, ``geometry`` (the entity's
``location`` — or the subscription's ``geometryProperty`` — as bare GeoJSON, ``null`` when the
entity has none), ``properties`` (the attributes in the subscription's format, plus the entity
``type``) and, without a ``Link`` header, ``@context``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from beats.fiware.shape import entity_views, is_geojson
from common.normalize import Rejected

__all__ = ["LD_FORMATS", "feature_entity", "features", "guess_format", "ld_entity"]

LD_FORMATS = {
    "normalized": "normalized",
    "simplified": "keyValues",
    "keyvalues": "keyValues",
    "concise": "concise",
}
"""Header / subscription spellings (lower case) → the format name used in events."""

_ENTITY_MEMBERS = frozenset(
    {"id", "type", "@context", "scope", "createdAt", "modifiedAt", "deletedAt"}
)
_CONTENT = {  # the member holding an attribute's content, by LD attribute type
    "Property": "value",
    "GeoProperty": "value",
    "Relationship": "object",
    "LanguageProperty": "languageMap",
    "VocabProperty": "vocab",
    "JsonProperty": "json",
    "ListProperty": "valueList",
    "ListRelationship": "objectList",
}
_RELATIONSHIP_CONTENT = frozenset({"object", "objectList"})
_PROMOTED = ("unitCode", "observedAt", "datasetId", "createdAt", "modifiedAt", "lang")
_PREVIOUS = ("previousValue", "previousObject", "previousLanguageMap", "previousVocab")
_NOT_METADATA = frozenset(
    {"type", "instanceId", "deletedAt", *_CONTENT.values(), *_PROMOTED, *_PREVIOUS}
)


def guess_format(entity: Any) -> str:
    """``normalized`` when some attribute has an LD ``type``; ``concise`` when some attribute
    is ``{"value"|"object"|…: …}`` without one; else ``keyValues``."""
    if not isinstance(entity, dict):
        return "normalized"
    attributes = [v for k, v in entity.items() if k not in _ENTITY_MEMBERS]
    instances = [i for a in attributes for i in (a if isinstance(a, list) else [a])]
    objects = [i for i in instances if isinstance(i, dict)]
    if any(isinstance(i.get("type"), str) and i["type"] in _CONTENT for i in objects):
        return "normalized"
    if any(_content_key(i) for i in objects):
        return "concise"
    return "keyValues"


def _content_key(raw: Mapping[str, Any]) -> str | None:
    return next((key for key in _CONTENT.values() if key in raw), None)


def _typed(raw: Mapping[str, Any], concise: bool) -> tuple[str | None, str | None]:
    """(LD type, content member) of an attribute object, inferring the type in concise form."""
    declared = raw.get("type")
    if isinstance(declared, str) and declared in _CONTENT:
        return declared, _CONTENT[declared]
    key = _content_key(raw)
    if key is None or not concise:
        return (declared if isinstance(declared, str) else None), key
    inferred = next(t for t, k in _CONTENT.items() if k == key)
    if inferred == "Property" and is_geojson(raw.get("value")):
        inferred = "GeoProperty"
    return inferred, key


def _bare(value: Any, concise: bool) -> dict[str, Any]:
    if concise and is_geojson(value):
        return {"type": "GeoProperty", "value": value, "metadata": {}}
    return {"type": "Property" if concise else None, "value": value, "metadata": {}}


def _instance(raw: Any, concise: bool) -> dict[str, Any]:
    """One attribute (or sub-property) object in the shared shape."""
    if not isinstance(raw, dict) or (concise and is_geojson(raw)):
        return _bare(raw, concise)
    ld_type, key = _typed(raw, concise)
    if key is None and concise:  # a structured value without "value": the value itself
        return _bare(raw, concise)
    attribute: dict[str, Any] = {"type": ld_type}
    if key is None:  # malformed (no content member): sub-properties are still kept
        attribute["value"] = None
    else:
        attribute["object" if key in _RELATIONSHIP_CONTENT else "value"] = raw[key]
    if key not in (None, "value", "object"):
        attribute[str(key)] = raw[str(key)]
    attribute.update({name: raw[name] for name in _PROMOTED if name in raw})
    previous = next((raw[name] for name in _PREVIOUS if name in raw), None)
    if previous is not None:
        attribute["previousValue"] = previous
    metadata = {k: v for k, v in raw.items() if k not in _NOT_METADATA}
    attribute["metadata"] = {k: _instance(v, concise) for k, v in metadata.items()}
    return attribute


def _is_multi(raw: Any) -> bool:
    if not isinstance(raw, list) or not raw:
        return False
    return all(isinstance(i, dict) and (_content_key(i) or "datasetId" in i) for i in raw)


def _attribute(raw: Any, fmt: str) -> dict[str, Any]:
    if fmt == "keyValues":
        return {"type": "GeoProperty" if is_geojson(raw) else None, "value": raw, "metadata": {}}
    concise = fmt == "concise"
    if not _is_multi(raw):
        return _instance(raw, concise)
    instances = [_instance(item, concise) for item in raw]
    default = next((i for i in instances if "datasetId" not in i), instances[0])
    return {**default, "instances": instances}


def ld_entity(entity: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    """One LD entity (``id`` already checked to be a string) in the shared shape."""
    attributes = {
        name: _attribute(raw, fmt) for name, raw in entity.items() if name not in _ENTITY_MEMBERS
    }
    return {
        "id": entity["id"],
        "type": entity.get("type"),
        "alteration_type": None,
        "modified_at": entity.get("modifiedAt"),
        "attributes": attributes,
        **entity_views(attributes),
    }


def features(data: Any) -> list[Any] | None:
    """The features of a GeoJSON notification's ``data``; ``None`` when it is not one."""
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        return None
    found = data.get("features")
    if not isinstance(found, list):
        raise Rejected("a GeoJSON notification's FeatureCollection has no 'features' list")
    return found


def feature_entity(feature: Any) -> tuple[dict[str, Any], Any]:
    """One ``Feature`` → (the entity it stands for, its ``geometry``)."""
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise Rejected("a GeoJSON notification holds something that is not a Feature")
    properties = feature.get("properties")
    if not isinstance(properties, dict):
        raise Rejected("a GeoJSON Feature has no 'properties' object")
    entity = {"id": feature.get("id"), **{k: v for k, v in properties.items() if k != "id"}}
    if "@context" in feature:
        entity["@context"] = feature["@context"]
    return entity, feature.get("geometry")
