"""How Orion builds an NGSI v2 notification request for one change. Pure (no I/O). (Orion-LD's:
:mod:`.ld_bodies`.)

v2, after ``orion-api.md`` § Notification Messages, Custom Notifications, Builtin Attributes /
Metadata, Covered Subscriptions and the accumulator dumps of Orion's functional tests: ``POST``
with ``Content-Type: application/json; charset=utf-8``, ``Accept``, ``User-Agent: orion/…``,
``Fiware-Servicepath`` (always), ``Fiware-Service`` (not for the default tenant),
``Ngsiv2-AttrsFormat`` (``custom`` for ``payload``/``json``), ``Fiware-Correlator: <root>;
cbnotif=<n>`` and the triggering request's ``X-Auth-Token``; ``httpCustom`` adds ``method``,
``qs``, ``headers`` (``""`` removes a header), ``payload`` (text, ``null``: no body), ``json`` and
``ngsi`` (patch), with ``${id}``, ``${type}``, ``${service}``, ``${servicePath}``,
``${authToken}`` and ``${<attribute>}`` substituted (plain names only, no JEXL).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from beats.fiware.emulator.model import Change, Entity, Subscription

__all__ = ["Outgoing", "dump", "v2_notification"]

USER_AGENT = "orion/4.7.0-emulator"
_MACRO = re.compile(r"\$\{([^}]*)\}")
_BUILTIN_METADATA = ("dateCreated", "dateModified", "previousValue", "actionType")
_JSON_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Outgoing:
    """One notification request, ready to send."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)


def dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


# --- NGSI v2 -----------------------------------------------------------------------------


def _builtin(name: str, entity: Entity, change: Change) -> dict[str, Any] | None:
    values = {
        "dateCreated": ("DateTime", entity.created),
        "dateModified": ("DateTime", entity.modified),
        "alterationType": ("Text", change.alteration),
        "servicePath": ("Text", entity.path),
    }
    if name not in values:
        return None
    kind, value = values[name]
    return {"type": kind, "value": value, "metadata": {}}


def _metadata(name: str, attr: dict[str, Any], change: Change, wanted: list[str]) -> dict[str, Any]:
    """User metadata (filtered by ``notification.metadata``) plus the builtins it asks for."""
    own = attr.get("metadata") or {}
    keep_all = not wanted or "*" in wanted
    meta = {k: v for k, v in own.items() if keep_all or k in wanted}
    if "previousValue" in wanted and name in change.previous:
        before = change.previous[name]
        meta["previousValue"] = {"type": before.get("type"), "value": before.get("value")}
    if "actionType" in wanted and name in change.touched:
        action = "delete" if change.alteration == "entityDelete" else "update"
        meta["actionType"] = {
            "type": "Text",
            "value": "append" if name not in change.previous and action == "update" else action,
        }
    for stamp in ("dateCreated", "dateModified"):
        if stamp in wanted:
            meta[stamp] = {"type": "DateTime", "value": change.entity.modified}
    return meta


def _v2_attrs(sub: Subscription, change: Change, entity: Entity) -> dict[str, Any]:
    note = sub.body.get("notification", {})
    wanted: list[str] = list(note.get("attrs") or [])
    names = [n for n in entity.attrs if not note.get("onlyChangedAttrs") or n in change.touched]
    if wanted and "*" not in wanted:
        names = [n for n in wanted if n in entity.attrs and n in names]
        if note.get("covered"):
            names = [n for n in wanted if _builtin(n, entity, change) is None]
    names = [n for n in names if n not in (note.get("exceptAttrs") or [])]
    meta_wanted = list(note.get("metadata") or [])
    attrs: dict[str, Any] = {}
    for name in names:
        attr = entity.attrs.get(name, {"type": "None", "value": None, "metadata": {}})
        attrs[name] = {**attr, "metadata": _metadata(name, attr, change, meta_wanted)}
    for name in wanted:
        builtin = _builtin(name, entity, change)
        if builtin is not None:
            attrs[name] = builtin
    return attrs


def _values_order(sub: Subscription, attrs: dict[str, Any]) -> list[Any]:
    wanted = [n for n in sub.body.get("notification", {}).get("attrs") or [] if n in attrs]
    return [attrs[n]["value"] for n in (wanted or list(attrs))]


def _v2_body(sub: Subscription, fmt: str, entity: Entity, attrs: dict[str, Any]) -> Any:
    normalized = {"id": entity.id, "type": entity.type, **attrs}
    key_values = {"id": entity.id, "type": entity.type, **{k: a["value"] for k, a in attrs.items()}}
    if fmt == "keyValues":
        return {"subscriptionId": sub.id, "data": [key_values]}
    if fmt == "values":
        return {"subscriptionId": sub.id, "data": [_values_order(sub, attrs)]}
    if fmt == "simplifiedNormalized":
        return normalized
    if fmt == "simplifiedKeyValues":
        return key_values
    return {"subscriptionId": sub.id, "data": [normalized]}


def _macros(sub: Subscription, change: Change, entity: Entity) -> dict[str, Any]:
    values: dict[str, Any] = {n: a.get("value") for n, a in entity.attrs.items()}
    values.update(
        id=entity.id,
        type=entity.type,
        service=sub.tenant or "",
        servicePath=entity.path,
        authToken=change.auth.get("X-Auth-Token", ""),
    )
    return values


def _text_macro(template: str, values: dict[str, Any]) -> str:
    def one(match: re.Match[str]) -> str:
        value = values.get(match.group(1).strip())
        if value is None:
            return "null"
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))

    return _MACRO.sub(one, template)


def _json_macro(template: Any, values: dict[str, Any]) -> Any:
    """A string that is exactly one macro keeps the attribute's JSON type; a partial macro
    is text (``orion-api.md`` § JSON payloads)."""
    if isinstance(template, dict):
        return {k: _json_macro(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_json_macro(v, values) for v in template]
    if isinstance(template, str):
        whole = _MACRO.fullmatch(template)
        if whole:
            return values.get(whole.group(1).strip())
        return _text_macro(template, values)
    return template


def _patched(entity: Entity, patch: dict[str, Any], values: dict[str, Any]) -> Entity:
    """``httpCustom.ngsi``: update-or-append the entity seen by the notification."""
    result = entity.copy()
    for key, raw in patch.items():
        if key in ("id", "type"):
            setattr(result, key, _text_macro(str(raw), values))
        elif isinstance(raw, dict):
            value = _json_macro(raw.get("value"), values)
            kind = raw.get("type") or result.attrs.get(key, {}).get("type") or "Text"
            result.attrs[key] = {"type": kind, "value": value, "metadata": {}}
    return result


def _v2_headers(sub: Subscription, change: Change, entity: Entity, cbnotif: int) -> dict[str, str]:
    note = sub.body.get("notification", {})
    headers = {
        "Content-Type": _JSON_TYPE,
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
        "Fiware-Servicepath": entity.path,
        "Ngsiv2-AttrsFormat": note.get("attrsFormat", "normalized"),
        "Fiware-Correlator": f"{change.correlator}; cbnotif={cbnotif}",
    }
    if sub.tenant:
        headers["Fiware-Service"] = sub.tenant
    if "X-Auth-Token" in change.auth:
        headers["X-Auth-Token"] = change.auth["X-Auth-Token"]
    return headers


def _custom_headers(
    headers: dict[str, str], custom: dict[str, Any], values: dict[str, Any]
) -> None:
    protected = {"fiware-correlator", "ngsiv2-attrsformat"}
    for key, raw in (custom.get("headers") or {}).items():
        if key.lower() in protected:
            continue
        for existing in [k for k in headers if k.lower() == key.lower()]:
            del headers[existing]
        value = _text_macro(unquote(str(raw)), values)
        if value != "":
            headers[key] = value


def _custom_body(custom: dict[str, Any], values: dict[str, Any], headers: dict[str, str]) -> bytes:
    headers["Ngsiv2-AttrsFormat"] = "custom"
    declared = {k.lower() for k in (custom.get("headers") or {})}
    if "json" in custom:
        return dump(_json_macro(custom["json"], values))
    if "content-type" not in declared:
        headers["Content-Type"] = "text/plain; charset=utf-8"
    if custom["payload"] is None:
        headers.pop("Content-Type", None)
        return b""
    return _text_macro(unquote(str(custom["payload"])), values).encode()


def v2_notification(sub: Subscription, change: Change, cbnotif: int = 1) -> Outgoing:
    """The request Orion sends for ``change`` to ``sub`` (an NGSI v2 subscription)."""
    note = sub.body.get("notification", {})
    custom = note.get("httpCustom") or {}
    values = _macros(sub, change, change.entity)
    entity = change.entity
    if isinstance(custom.get("ngsi"), dict):
        entity = _patched(entity, custom["ngsi"], values)
    headers = _v2_headers(sub, change, entity, cbnotif)
    url = _text_macro(str((custom or note.get("http") or {}).get("url", "")), values)
    params = {k: _text_macro(str(v), values) for k, v in (custom.get("qs") or {}).items()}
    if custom.get("payload", "") != "" or "json" in custom:
        body = _custom_body(custom, values, headers)
    else:
        attrs = _v2_attrs(sub, change, entity)
        body = dump(_v2_body(sub, headers["Ngsiv2-AttrsFormat"], entity, attrs))
    _custom_headers(headers, custom, values)
    return Outgoing(str(custom.get("method") or "POST"), url, headers, body, params)
