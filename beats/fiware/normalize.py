"""Orion (NGSI v2) and NGSI-LD notifications → CloudEvents. Pure (no I/O) and total: bad input
raises :class:`~common.normalize.Rejected`, nothing else. One event per entity, one data shape for
v2 and LD (:mod:`beats.fiware.shape`, :mod:`beats.fiware.ngsi_v2`, :mod:`beats.fiware.ngsi_ld`).

**Format detection**, first match wins; header names in any case (Orion sends
``Fiware-Servicepath``, ``Ngsiv2-AttrsFormat``; Orion-LD ``Ngsild-Tenant``):

1. ``Ngsiv2-AttrsFormat: custom`` — an ``httpCustom`` ``payload``/``json`` notification: one raw
   event keeping the body losslessly;
2. ``Ngsiv2-AttrsFormat`` with a v2 format (``normalized``, ``keyValues``, ``values``,
   ``simplifiedNormalized``, ``simplifiedKeyValues``) — v2 (also Orion-LD's cross-API formats);
3. ``Ngsild-Attribute-Format`` (``Normalized``, ``Simplified``/``keyValues``, ``Concise``), an
   ``application/ld+json`` content type or a JSON-LD ``Link`` header — NGSI-LD;
4. the body: ``"type": "Notification"``, ``@context`` or ``notifiedAt`` → LD (format guessed per
   entity); ``{"data": [...]}`` → v2 (format guessed); a bare entity → v2 ``simplified*``.

A body that is not JSON and not declared ``custom`` is rejected (the reason says so).

**Events.** ``beats.fiware.entity`` on channel ``entities``, one per entity, ``data``:
``id``, ``type``, ``ngsi`` (``v2``/``ld``), ``format``, ``tenant`` (``Fiware-Service`` /
``NGSILD-Tenant``), ``service_path`` (v2; ``/`` when absent), ``subscription_id``,
``notified_at`` (LD), ``notification_id`` (LD), ``correlator`` (``Fiware-Correlator``),
``context`` (LD ``@context`` from the body, the entity or the ``Link`` header),
``alteration_type`` (v2 built-in ``alterationType``), ``attributes``, ``values``,
``relationships``, ``geo`` (see :mod:`beats.fiware.shape`) and ``entity`` — the entity exactly
as the broker sent it; ``notification`` holds the other members of the body (nothing is lost).
``subject`` = ``partitionkey`` = entity id (a ``values`` row has no id: the subscription id);
``time`` = ``notifiedAt``, else the entity's ``dateModified``/``modifiedAt``, else the newest
attribute modification, else the newest ``observedAt``.

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
from typing import Any

from beats.fiware import ngsi_ld, ngsi_v2
from beats.fiware.shape import latest_time
from common.envelope import CloudEvent, new_event
from common.jsonsafe import MAX_DEPTH, NotJson, loads, too_deep
from common.normalize import Rejected

__all__ = ["Notification", "normalize"]

_LINK = re.compile(r"<([^>]*)>")
_UNPARSED: Any = object()
_SIMPLIFIED = frozenset({"simplifiedNormalized", "simplifiedKeyValues"})


@dataclass(frozen=True)
class Notification:
    """What ``/notify`` received: the raw body, the request headers (names in any case) and,
    optionally, the body already parsed as JSON (saves parsing it twice)."""

    body: bytes
    headers: Mapping[str, str]
    parsed: Any = _UNPARSED
    _lower: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lower = {str(k).lower(): str(v) for k, v in self.headers.items()}
        object.__setattr__(self, "_lower", lower)

    def header(self, name: str) -> str | None:
        return self._lower.get(name.lower())


@dataclass(frozen=True)
class _Batch:
    """One notification's entities, ready to shape: what every event of it shares."""

    ld: bool
    entities: list[tuple[Any, str]]
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
    v2_format = notification.header("Ngsiv2-AttrsFormat")
    if v2_format == "custom":
        return [_raw_event(notification, source)]
    body = _parse(notification)
    batch = _batch(notification, body, v2_format, value_names or {})
    digest = hashlib.sha256(notification.body).hexdigest()
    return [
        _entity_event(batch, entity, fmt, index, digest, source)
        for index, (entity, fmt) in enumerate(batch.entities)
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


def _is_ld(notification: Notification, v2_format: str | None, body: Any) -> bool:
    if v2_format in ngsi_v2.V2_FORMATS:
        return False
    content_type = (notification.header("Content-Type") or "").lower()
    if notification.header("Ngsild-Attribute-Format") or "ld+json" in content_type:
        return True
    if "json-ld#context" in (notification.header("Link") or ""):
        return True
    if not isinstance(body, dict):
        return False
    return body.get("type") == "Notification" or "@context" in body or "notifiedAt" in body


def _batch(
    notification: Notification,
    body: Any,
    v2_format: str | None,
    value_names: Mapping[str, list[str]],
) -> _Batch:
    if not isinstance(body, dict):
        raise Rejected("notification body is not a JSON object")
    if _is_ld(notification, v2_format, body):
        return _ld_batch(notification, body)
    return _v2_batch(notification, body, v2_format, value_names)


def _common(notification: Notification, body: Mapping[str, Any], ld: bool) -> dict[str, Any]:
    tenant = notification.header("NGSILD-Tenant") or notification.header("Fiware-Service")
    return {
        "ngsi": "ld" if ld else "v2",
        "tenant": tenant or None,
        "service_path": None if ld else (notification.header("Fiware-ServicePath") or "/"),
        "subscription_id": _text(body.get("subscriptionId")),
        "notified_at": _text(body.get("notifiedAt")) if ld else None,
        "notification_id": _text(body.get("id")) if ld else None,
        "correlator": notification.header("Fiware-Correlator"),
        "context": None,
        "notification": {k: v for k, v in body.items() if k != "data"},
    }


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _v2_batch(
    notification: Notification,
    body: dict[str, Any],
    v2_format: str | None,
    value_names: Mapping[str, list[str]],
) -> _Batch:
    fmt = v2_format if v2_format in ngsi_v2.V2_FORMATS else None
    if fmt in _SIMPLIFIED or (fmt is None and "data" not in body and "id" in body):
        return _simplified(notification, body, fmt)
    if isinstance(body.get("data"), list):
        meta = _common(notification, body, ld=False)
        rows = body["data"]
        if fmt == "values" or (fmt is None and rows and isinstance(rows[0], list)):
            names = value_names.get(str(meta["subscription_id"]), [])
            meta["value_names"] = list(names)
            return _Batch(False, [(row, "values") for row in rows], meta)
        return _Batch(False, [(e, fmt or ngsi_v2.guess_format(e)) for e in rows], meta)
    raise Rejected("NGSI v2 notification has neither a 'data' list nor an entity")


def _simplified(notification: Notification, body: dict[str, Any], fmt: str | None) -> _Batch:
    """``simplifiedNormalized`` / ``simplifiedKeyValues``: the body is the entity itself."""
    if fmt is None:
        guessed = ngsi_v2.guess_format(body)
        fmt = "simplifiedKeyValues" if guessed == "keyValues" else "simplifiedNormalized"
    return _Batch(False, [(body, fmt)], _common(notification, {}, ld=False))


def _ld_context(notification: Notification, body: Mapping[str, Any]) -> Any:
    if "@context" in body:
        return body["@context"]
    link = notification.header("Link")
    found = _LINK.search(link) if link else None
    return found.group(1) if found else None


def _ld_batch(notification: Notification, body: dict[str, Any]) -> _Batch:
    if not isinstance(body.get("data"), list):
        raise Rejected("NGSI-LD notification has no 'data' list")
    header = (notification.header("Ngsild-Attribute-Format") or "").lower()
    fmt = ngsi_ld.LD_FORMATS.get(header)
    meta = _common(notification, body, ld=True)
    meta["context"] = _ld_context(notification, body)
    entities = [(e, fmt or ngsi_ld.guess_format(e)) for e in body["data"]]
    return _Batch(True, entities, meta)


def _shape(batch: _Batch, entity: Any, fmt: str) -> dict[str, Any]:
    if fmt == "values":
        if not isinstance(entity, list):
            raise Rejected("a 'values' notification must carry lists of values")
        return ngsi_v2.v2_values_row(entity, batch.meta.get("value_names", []))
    if not isinstance(entity, dict) or not isinstance(entity.get("id"), str) or not entity["id"]:
        raise Rejected("an entity has no string 'id'")
    if batch.ld:
        shaped = ngsi_ld.ld_entity(entity, fmt)
        if batch.meta["context"] is None and "@context" in entity:
            shaped["context"] = entity["@context"]
        return shaped
    return ngsi_v2.v2_entity(entity, fmt)


def _event_id(batch: _Batch, index: int, entity_id: str, digest: str) -> str:
    meta = batch.meta
    parts = (meta["subscription_id"], meta["notified_at"], meta["correlator"], index, entity_id)
    key = "\x1f".join("" if part is None else str(part) for part in parts) + "\x1f" + digest
    return "fiware-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def _entity_event(
    batch: _Batch, entity: Any, fmt: str, index: int, digest: str, source: str
) -> CloudEvent:
    shaped = _shape(batch, entity, fmt)
    modified = shaped.pop("modified_at")
    data = {**batch.meta, **shaped}
    data.pop("value_names", None)
    data["format"], data["entity"] = fmt, entity
    subject = shaped["id"] or batch.meta["subscription_id"] or "values"
    return new_event(
        beat="fiware",
        type="beats.fiware.entity",
        source=source,
        channel="entities",
        subject=subject,
        partitionkey=subject,
        id=_event_id(batch, index, subject, digest),
        time=latest_time(batch.meta["notified_at"], modified, shaped["attributes"]),
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
        data=data,
    )
