"""How Orion-LD builds a notification request for one change, in both of its modes. Pure.

Orion-LD sends notifications down one of two code paths, chosen by its ``-experimental`` flag:

* **default** (how Orion-LD ships and runs without ``-experimental``; its functional tests
  ``ngsild_notification_with_observedAt.test``, ``ngsild_notification_with_concise.test``,
  ``ngsild_notification-with-autorization-and-tenant-header.test``,
  ``ngsild_geojson-format-in-notifications*.test``): the legacy (Orion) sender.
  ``User-Agent: orion/…``, ``Fiware-Servicepath: /``, ``Ngsiv2-Attrsformat: normalized``
  (``keyValues`` for simplified, ``concise`` for concise — an NGSI v2 header on an NGSI-LD
  body), ``Content-Type: application/json; charset=utf-8`` with a JSON-LD ``Link`` header,
  ``application/ld+json`` with ``@context`` in the body, or ``application/geo+json`` (no
  ``Link``); no ``Ngsild-Attribute-Format``;
* **experimental** (``notificationSend.cpp``, ``ngsild_new_notification_with_concise.test``,
  ``ngsild_issue-1381-new_notification-in-geojson-format.test``): ``User-Agent: orionld/…``,
  ``Ngsild-Attribute-Format`` (``Normalized``, ``Simplified``, ``Concise``),
  ``Content-Type: application/json`` plus ``Link``, or ``application/ld+json`` with
  ``@context`` in the body, or ``application/geo+json`` plus ``Link``.

Both: ``POST <uri>?subscriptionId=<id>``, ``Ngsild-Tenant``, the triggering request's
``X-Auth-Token`` and the ``receiverInfo`` headers; body ``{"id":
"urn:ngsi-ld:Notification:<uuid>", "type": "Notification", "subscriptionId", "notifiedAt",
"data": [entity]}``. With ``endpoint.accept: application/geo+json``, ``data`` is a
``FeatureCollection``: one ``Feature`` per entity with ``id``, ``geometry`` (the ``location``
GeoProperty as bare GeoJSON, ``null`` without one), ``properties`` (the attributes in the
subscription's format plus the entity ``type``) and ``@context`` (``kjGeojsonEntityTransform.cpp``).
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from beats.fiware.emulator.bodies import Outgoing, dump
from beats.fiware.emulator.model import Change, Subscription, now

__all__ = ["CORE_CONTEXT", "LdMode", "ld_notification"]

LdMode = Literal["default", "experimental"]
CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
LD_USER_AGENT = "orionld/1.7.0-emulator"
LEGACY_USER_AGENT = "orion/1.7.0-emulator"
_LD_FORMAT_HEADER = {"normalized": "Normalized", "concise": "Concise"}
_V2_FORMAT_HEADER = {"normalized": "normalized", "concise": "concise"}
_LINK_REL = 'rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'


def _ld_content(attr: dict[str, Any]) -> Any:
    for key in ("value", "object", "languageMap", "vocab", "json", "valueList", "objectList"):
        if key in attr:
            return attr[key]
    return None


def _concise(attr: Any) -> Any:
    if isinstance(attr, list):
        return [_concise(instance) for instance in attr]
    if not isinstance(attr, dict):
        return attr
    rest = {k: v for k, v in attr.items() if k != "type"}
    if list(rest) == ["value"] and not isinstance(rest["value"], dict | list):
        return rest["value"]
    if list(rest) == ["value"] and attr.get("type") == "GeoProperty":
        return rest["value"]
    return {k: _concise(v) if isinstance(v, dict) and "type" in v else v for k, v in rest.items()}


def _ld_attr(attr: Any, fmt: str, show_changes: bool) -> Any:
    if not show_changes and isinstance(attr, dict):
        attr = {k: v for k, v in attr.items() if k not in ("previousValue", "previousObject")}
    if fmt in ("keyValues", "simplified"):
        if isinstance(attr, list):
            return [_ld_content(i) for i in attr if isinstance(i, dict)]
        return _ld_content(attr) if isinstance(attr, dict) else attr
    return _concise(attr) if fmt == "concise" else attr


def _previous(change: Change, name: str, attr: Any) -> Any:
    before = change.previous.get(name)
    if not isinstance(attr, dict) or not isinstance(before, dict):
        return attr
    key = "previousObject" if "object" in attr else "previousValue"
    return {**attr, key: _ld_content(before)}


def _ld_entity(sub: Subscription, change: Change) -> dict[str, Any]:
    note = sub.body.get("notification", {})
    wanted = note.get("attributes") or []
    fmt, show = note.get("format", "normalized"), bool(note.get("showChanges"))
    entity = change.entity
    data: dict[str, Any] = {"id": entity.id, "type": entity.type}
    for name, attr in entity.attrs.items():
        if not wanted or name in wanted:
            shown = _previous(change, name, attr) if show else attr
            data[name] = _ld_attr(shown, fmt, show)
    if note.get("sysAttrs"):
        data.update(createdAt=entity.created, modifiedAt=entity.modified)
    return data


def _feature(change: Change, entity: dict[str, Any], context: Any) -> dict[str, Any]:
    location = change.entity.attrs.get("location")
    geometry = location.get("value") if isinstance(location, dict) else None
    properties = {k: v for k, v in entity.items() if k != "id"}
    return {
        "id": entity["id"],
        "type": "Feature",
        "geometry": geometry,
        "properties": properties,
        "@context": context,
    }


def _headers(sub: Subscription, change: Change, accept: str, mode: LdMode) -> dict[str, str]:
    fmt = sub.body.get("notification", {}).get("format", "normalized")
    context = sub.body.get("@context") or CORE_CONTEXT
    link = f"<{context if isinstance(context, str) else CORE_CONTEXT}>; {_LINK_REL}"
    headers = {"Accept": "application/json"}
    if mode == "default":
        headers["User-Agent"] = LEGACY_USER_AGENT
        headers["Fiware-Servicepath"] = "/"
        headers["Ngsiv2-AttrsFormat"] = _V2_FORMAT_HEADER.get(fmt, "keyValues")
        headers["Content-Type"] = (
            accept if accept != "application/json" else "application/json; charset=utf-8"
        )
        if accept == "application/json":
            headers["Link"] = link
    else:
        headers["User-Agent"] = LD_USER_AGENT
        headers["Ngsild-Attribute-Format"] = _LD_FORMAT_HEADER.get(fmt, "Simplified")
        headers["Content-Type"] = accept
        if accept != "application/ld+json":
            headers["Link"] = link
    if change.tenant:
        headers["Ngsild-Tenant"] = change.tenant
    return headers


def ld_notification(sub: Subscription, change: Change, mode: LdMode = "default") -> Outgoing:
    """The request Orion-LD (in ``mode``) sends for ``change`` to ``sub``."""
    note = sub.body.get("notification", {})
    endpoint = note.get("endpoint", {})
    accept = endpoint.get("accept")
    if accept not in ("application/ld+json", "application/geo+json"):
        accept = "application/json"
    context = sub.body.get("@context") or CORE_CONTEXT
    entity = _ld_entity(sub, change)
    data: Any = [entity]
    if accept == "application/geo+json":
        data = {"type": "FeatureCollection", "features": [_feature(change, entity, context)]}
    body: dict[str, Any] = {
        "id": f"urn:ngsi-ld:Notification:{uuid.uuid4()}",
        "type": "Notification",
        "subscriptionId": sub.id,
        "notifiedAt": now(),
        "data": data,
    }
    if accept == "application/ld+json":
        body["@context"] = context
    headers = _headers(sub, change, accept, mode)
    headers.update(change.auth)
    for info in endpoint.get("receiverInfo") or []:
        headers[str(info.get("key"))] = str(info.get("value"))
    params = {"subscriptionId": sub.id}
    return Outgoing("POST", str(endpoint.get("uri", "")), headers, dump(body), params)
