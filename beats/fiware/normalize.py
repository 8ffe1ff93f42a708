"""Orion (NGSI v2, NGSIv1) and NGSI-LD notifications → CloudEvents. Pure (no I/O) and total: bad
input raises :class:`~common.normalize.Rejected`, nothing else. One event per entity, one data
shape for every API (:mod:`beats.fiware.shape`, :mod:`beats.fiware.ngsi_v2`,
:mod:`beats.fiware.ngsi_ld`, :mod:`beats.fiware.ngsi_v1`).

**API detection**, per notification, strongest evidence first; header names in any case (Orion
sends ``Fiware-Servicepath``, ``Ngsiv2-AttrsFormat``; Orion-LD ``Ngsild-Tenant``):

1. ``Ngsiv2-AttrsFormat: custom`` — an ``httpCustom`` ``payload``/``json`` notification: one raw
   event keeping the body losslessly;
2. NGSI-LD by transport: an ``application/ld+json`` or ``application/geo+json`` content type, a
   JSON-LD ``Link`` header or an ``Ngsild-Attribute-Format`` header;
3. ``Ngsiv2-AttrsFormat: simplifiedNormalized|simplifiedKeyValues`` — the body is a bare v2
   entity (only Orion sends these formats, and an entity may be of any type, ``Notification``
   included);
4. the body: ``contextResponses`` → NGSIv1 (``attrsFormat: legacy``, Orion 3.x and older);
   ``"type": "Notification"``, ``notifiedAt``, ``@context`` or a GeoJSON ``FeatureCollection``
   in ``data`` → NGSI-LD; ``{"data": [...]}`` → v2; a bare entity → v2 ``simplified*``.

``Ngsiv2-AttrsFormat`` is otherwise only a hint for the *format*: Orion-LD in its default
(non-experimental) mode sends NGSI-LD notifications with ``Ngsiv2-AttrsFormat: normalized``,
``keyValues`` or ``concise`` (its functional tests run without ``-experimental``), Orion-LD's
cross-API formats (``x-ngsiv2-*``) send real v2 bodies with it. The LD format comes from
``Ngsild-Attribute-Format``, else from that hint, else it is guessed per entity.

A body that is not JSON and not declared ``custom`` is rejected (the reason says so).

**Events.** ``beats.fiware.entity`` on channel ``entities``, one per entity (a GeoJSON
``Feature``, an NGSIv1 context element), ``data``: ``id``, ``type``, ``ngsi`` (``v2``, ``ld`` or
``v1``), ``format`` (``legacy`` for v1), ``tenant`` (``Fiware-Service`` / ``NGSILD-Tenant``),
``service_path`` (v2 and v1; ``/`` when absent), ``subscription_id``, ``notified_at`` (LD),
``notification_id`` (LD), ``correlator`` (``Fiware-Correlator``), ``context`` (LD ``@context``
from the body, the entity or Feature, or the ``Link`` header), ``alteration_type`` (v2 built-in
``alterationType``), ``geometry`` (a GeoJSON Feature's ``geometry``, else ``None``), ``status``
(an NGSIv1 element's ``statusCode`` as ``{"code", "reason", "details"?}``, else ``None``),
``attributes``, ``values``, ``relationships``, ``geo`` (see :mod:`beats.fiware.shape`) and
``entity`` — the entity (Feature, context element) exactly as the broker sent it;
``notification`` holds the other members of the body (nothing is lost). ``subject`` =
``partitionkey`` = entity id (a ``values`` row has no id: the subscription id); ``time`` =
``notifiedAt``, else the entity's ``dateModified``/``modifiedAt``, else the newest attribute
modification, else the newest ``observedAt``, else when the beat received the notification.

``values`` rows are named by ``value_names`` (the subscription's ``notification.attrs``, known
for the subscriptions the beat created), else ``attr0``, ``attr1``, …

``beats.fiware.raw`` on channel ``raw``: a custom payload, ``data.text`` (UTF-8 text, exactly as
received) or ``data.base64`` (anything else), plus ``json`` when the text parses as JSON,
``content_type``, ``tenant``, ``service_path``, ``correlator``; ``subject`` is ``custom``,
``partitionkey`` the tenant and service path (so one tenant's custom payloads stay in order).

**Ids** are natural: a digest of the subscription id, ``notifiedAt``, the correlator, the
entity's position and id and the body's SHA-256. A notification delivered twice gets the same ids
(the log stores it once); two different notifications never share one, even when a client reuses
its ``Fiware-Correlator`` (Orion keeps a client's correlator).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from beats.fiware import ngsi_ld, ngsi_v1, ngsi_v2
from beats.fiware.shape import latest_time
from common.envelope import CloudEvent, new_event
from common.jsonsafe import MAX_DEPTH, NotJson, loads, too_deep
from common.normalize import Rejected

__all__ = ["Notification", "detect_api", "normalize"]

_LINK = re.compile(r"<([^>]*)>")
_UNPARSED: Any = object()
_SIMPLIFIED = frozenset({"simplifiedNormalized", "simplifiedKeyValues"})
_LD_CONTENT_TYPES = ("application/ld+json", "application/geo+json")


@dataclass(frozen=True)
class Notification:
    """What ``/notify`` received: the raw body, the request headers (names in any case),
    optionally the body already parsed as JSON (saves parsing it twice) and when it arrived
    (the events' ``time`` when the notification carries none)."""

    body: bytes
    headers: Mapping[str, str]
    parsed: Any = _UNPARSED
    received_at: datetime | None = None
    _lower: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lower = {str(k).lower(): str(v) for k, v in self.headers.items()}
        object.__setattr__(self, "_lower", lower)

    def header(self, name: str) -> str | None:
        return self._lower.get(name.lower())


@dataclass(frozen=True)
class _Item:
    """One entity of a notification: as sent, as shaped, its format and what only some APIs
    carry (a Feature's ``geometry``, an NGSIv1 element's ``status``)."""

    sent: Any
    entity: Any
    fmt: str
    geometry: Any = None
    status: dict[str, Any] | None = None


@dataclass(frozen=True)
class _Batch:
    """One notification's entities, ready to shape: what every event of it shares."""

    api: str
    items: list[_Item]
    meta: dict[str, Any]


def normalize(
    notification: Notification,
    *,
    source: str,
    value_names: Mapping[str, list[str]] | None = None,
) -> list[CloudEvent]:
    """Events for one notification. ``source`` is the broker (URL or URL + subscription);
    ``value_names`` maps a subscription id to its ``notification.attrs``, to name the columns of
    the ``values`` format."""
    if notification.header("Ngsiv2-AttrsFormat") == "custom":
        return [_raw_event(notification, source)]
    body = _parse(notification)
    batch = _batch(notification, body, value_names or {})
    digest = hashlib.sha256(notification.body).hexdigest()
    return [
        _entity_event(batch, item, index, digest, source, notification.received_at)
        for index, item in enumerate(batch.items)
    ]


def _parse(notification: Notification) -> Any:
    body = notification.parsed
    if body is _UNPARSED:
        try:
            body = loads(notification.body, what="notification body")
        except NotJson as exc:
            raise Rejected(
                f"{exc.reason}; custom text payloads need Ngsiv2-AttrsFormat: custom"
            ) from None
    elif too_deep(body):
        raise Rejected(f"notification body nests deeper than {MAX_DEPTH} levels")
    return body


def _ld_by_transport(notification: Notification) -> bool:
    content_type = (notification.header("Content-Type") or "").lower()
    if any(kind in content_type for kind in _LD_CONTENT_TYPES):
        return True
    if notification.header("Ngsild-Attribute-Format"):
        return True
    return "json-ld#context" in (notification.header("Link") or "")


def _ld_by_body(body: Mapping[str, Any]) -> bool:
    if body.get("type") == "Notification" or "notifiedAt" in body or "@context" in body:
        return True
    data = body.get("data")
    return isinstance(data, dict) and data.get("type") == "FeatureCollection"


def detect_api(notification: Notification, body: Any) -> str:
    """``ld``, ``v1`` or ``v2`` for a parsed (non-custom) notification body; see the module
    docstring for the order of the evidence."""
    if _ld_by_transport(notification):
        return "ld"
    if notification.header("Ngsiv2-AttrsFormat") in _SIMPLIFIED or not isinstance(body, dict):
        return "v2"
    if ngsi_v1.is_v1(body):
        return "v1"
    return "ld" if _ld_by_body(body) else "v2"


def _batch(notification: Notification, body: Any, value_names: Mapping[str, list[str]]) -> _Batch:
    if not isinstance(body, dict):
        raise Rejected("notification body is not a JSON object")
    api = detect_api(notification, body)
    if api == "ld":
        return _ld_batch(notification, body)
    if api == "v1":
        return _v1_batch(notification, body)
    return _v2_batch(notification, body, value_names)


def _common(notification: Notification, body: Mapping[str, Any], api: str) -> dict[str, Any]:
    tenant = notification.header("NGSILD-Tenant") or notification.header("Fiware-Service")
    ld = api == "ld"
    content = "contextResponses" if api == "v1" else "data"
    return {
        "ngsi": api,
        "tenant": tenant or None,
        "service_path": None if ld else (notification.header("Fiware-ServicePath") or "/"),
        "subscription_id": _text(body.get("subscriptionId")),
        "notified_at": _text(body.get("notifiedAt")) if ld else None,
        "notification_id": _text(body.get("id")) if ld else None,
        "correlator": notification.header("Fiware-Correlator"),
        "context": None,
        "notification": {k: v for k, v in body.items() if k != content},
    }


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _v2_batch(
    notification: Notification, body: dict[str, Any], value_names: Mapping[str, list[str]]
) -> _Batch:
    header = notification.header("Ngsiv2-AttrsFormat")
    fmt = header if header in ngsi_v2.V2_FORMATS else None
    if fmt in _SIMPLIFIED or (fmt is None and "data" not in body and "id" in body):
        return _simplified(notification, body, fmt)
    if isinstance(body.get("data"), list):
        meta = _common(notification, body, "v2")
        rows = body["data"]
        if fmt == "values" or (fmt is None and rows and isinstance(rows[0], list)):
            meta["value_names"] = list(value_names.get(str(meta["subscription_id"]), []))
            return _Batch("v2", [_Item(row, row, "values") for row in rows], meta)
        items = [_Item(e, e, fmt or ngsi_v2.guess_format(e)) for e in rows]
        return _Batch("v2", items, meta)
    raise Rejected("NGSI v2 notification has neither a 'data' list nor an entity")


def _simplified(notification: Notification, body: dict[str, Any], fmt: str | None) -> _Batch:
    """``simplifiedNormalized`` / ``simplifiedKeyValues``: the body is the entity itself."""
    if fmt is None:
        guessed = ngsi_v2.guess_format(body)
        fmt = "simplifiedKeyValues" if guessed == "keyValues" else "simplifiedNormalized"
    return _Batch("v2", [_Item(body, body, fmt)], _common(notification, {}, "v2"))


def _v1_batch(notification: Notification, body: dict[str, Any]) -> _Batch:
    responses = body["contextResponses"]
    if not isinstance(responses, list):
        raise Rejected("NGSIv1 notification has no 'contextResponses' list")
    items = []
    for response in responses:
        entity, status = ngsi_v1.context_response(response)
        items.append(_Item(response, entity, "legacy", status=status))
    return _Batch("v1", items, _common(notification, body, "v1"))


def _ld_context(notification: Notification, body: Mapping[str, Any]) -> Any:
    if "@context" in body:
        return body["@context"]
    link = notification.header("Link")
    found = _LINK.search(link) if link else None
    return found.group(1) if found else None


def _ld_format(notification: Notification) -> str | None:
    for header in ("Ngsild-Attribute-Format", "Ngsiv2-AttrsFormat"):
        fmt = ngsi_ld.LD_FORMATS.get((notification.header(header) or "").lower())
        if fmt is not None:
            return fmt
    return None


def _ld_batch(notification: Notification, body: dict[str, Any]) -> _Batch:
    fmt = _ld_format(notification)
    meta = _common(notification, body, "ld")
    meta["context"] = _ld_context(notification, body)
    features = ngsi_ld.features(body.get("data"))
    if features is not None:
        items = []
        for feature in features:
            entity, geometry = ngsi_ld.feature_entity(feature)
            items.append(_Item(feature, entity, fmt or ngsi_ld.guess_format(entity), geometry))
        return _Batch("ld", items, meta)
    if not isinstance(body.get("data"), list):
        raise Rejected("NGSI-LD notification has no 'data' list or FeatureCollection")
    items = [_Item(e, e, fmt or ngsi_ld.guess_format(e)) for e in body["data"]]
    return _Batch("ld", items, meta)


def _shape(batch: _Batch, item: _Item) -> dict[str, Any]:
    entity = item.entity
    if item.fmt == "values":
        if not isinstance(entity, list):
            raise Rejected("a 'values' notification must carry lists of values")
        return ngsi_v2.v2_values_row(entity, batch.meta.get("value_names", []))
    if not isinstance(entity, dict) or not isinstance(entity.get("id"), str) or not entity["id"]:
        raise Rejected("an entity has no string 'id'")
    if batch.api == "ld":
        shaped = ngsi_ld.ld_entity(entity, item.fmt)
        if batch.meta["context"] is None and "@context" in entity:
            shaped["context"] = entity["@context"]
        return shaped
    return ngsi_v2.v2_entity(entity, "normalized" if batch.api == "v1" else item.fmt)


def _event_id(batch: _Batch, index: int, entity_id: str, digest: str) -> str:
    meta = batch.meta
    parts = (meta["subscription_id"], meta["notified_at"], meta["correlator"], index, entity_id)
    key = "\x1f".join("" if part is None else str(part) for part in parts) + "\x1f" + digest
    return "fiware-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def _entity_event(
    batch: _Batch,
    item: _Item,
    index: int,
    digest: str,
    source: str,
    received_at: datetime | None,
) -> CloudEvent:
    shaped = _shape(batch, item)
    modified = shaped.pop("modified_at")
    data = {**batch.meta, **shaped}
    data.pop("value_names", None)
    data["format"], data["entity"] = item.fmt, item.sent
    data["geometry"], data["status"] = item.geometry, item.status
    subject = shaped["id"] or batch.meta["subscription_id"] or "values"
    when = latest_time(batch.meta["notified_at"], modified, shaped["attributes"])
    return new_event(
        beat="fiware",
        type="beats.fiware.entity",
        source=source,
        channel="entities",
        subject=subject,
        partitionkey=subject,
        id=_event_id(batch, index, subject, digest),
        time=when or received_at,
        data=data,
    )


def _raw_data(notification: Notification) -> dict[str, Any]:
    content_type = notification.header("Content-Type") or "text/plain"
    data: dict[str, Any] = {"content_type": content_type}
    try:
        data["text"] = text = notification.body.decode("utf-8")
    except UnicodeDecodeError:
        data["base64"] = base64.b64encode(notification.body).decode("ascii")
        return data
    if text.strip():
        with contextlib.suppress(Rejected):
            data["json"] = loads(text)
    return data


def _raw_event(notification: Notification, source: str) -> CloudEvent:
    tenant = notification.header("Fiware-Service") or notification.header("NGSILD-Tenant")
    path = notification.header("Fiware-ServicePath") or "/"
    correlator = notification.header("Fiware-Correlator")
    data = {
        **_raw_data(notification),
        "tenant": tenant or None,
        "service_path": path,
        "correlator": correlator,
    }
    digest = hashlib.sha256(notification.body).hexdigest()
    key = f"{correlator or ''}\x1f{digest}"
    return new_event(
        beat="fiware",
        type="beats.fiware.raw",
        source=source,
        channel="raw",
        subject="custom",
        partitionkey=f"{tenant or 'default'}{path}",
        id="fiware-raw-" + hashlib.sha256(key.encode()).hexdigest()[:40],
        time=notification.received_at,
        data=data,
    )
