"""Subscriptions CRUD for NGSI v2 (``orion-api.md`` § Subscriptions Operations) and NGSI-LD
(``/ngsi-ld/v1/subscriptions``, rendered as Orion-LD's ``kjTreeFromCachedSubscription.cpp``).

v2 GETs show Orion's defaults (``attrs: []``, ``attrsFormat``, ``onlyChangedAttrs``,
``covered``, ``condition.notifyOnMetadataChange``) and its bookkeeping: ``timesSent``,
``lastNotification``, ``lastSuccess``, ``lastSuccessCode``, ``lastFailure``,
``lastFailureReason``, ``failsCounter`` (left out when 0), ``status`` (``expired`` once past
``expires``). A subscription belongs to its tenant; ``Fiware-ServicePath`` narrows a list to the
subscriptions with exactly that path. LD GETs show ``status`` (``active``/``paused``/
``expired``), ``isActive``, ``notification.status`` (``ok``/``failed``), ``consecutiveErrors``,
``lastErrorReason``. Re-activating an LD subscription (``isActive: true``) clears its errors; a
v2 ``status: active`` does not reset ``failsCounter`` (Orion's full-lifecycle test).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from beats.fiware.emulator.apidoc import created
from beats.fiware.emulator.broker import Broker
from beats.fiware.emulator.model import LdError, OrionError, Subscription
from beats.fiware.emulator.requests import context, json_body, ld_context, page

__all__ = ["subscription_routes"]

_V2_FORMATS = ("normalized", "keyValues", "values", "simplifiedNormalized", "simplifiedKeyValues")
_LD_FORMATS = ("normalized", "keyValues", "simplified", "concise")
_ALTERATIONS = ("entityCreate", "entityUpdate", "entityChange", "entityDelete")


def _bad(message: str, *, ld: bool) -> Exception:
    if ld:
        return LdError(400, "BadRequestData", message)
    return OrionError(400, "BadRequest", message)


def _check_time(value: Any, name: str, *, ld: bool) -> None:
    if value is None:
        return
    try:
        datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise _bad(f"{name} is not a valid ISO8601 date", ld=ld) from None


def _check_v2_notification(note: Any) -> None:
    if not isinstance(note, dict):
        raise _bad("notification is missing", ld=False)
    targets = [
        k for k in ("http", "httpCustom", "mqtt", "mqttCustom", "kafka", "kafkaCustom") if k in note
    ]
    if len(targets) != 1:
        raise _bad("one of http, httpCustom, mqtt, mqttCustom, kafka, kafkaCustom", ld=False)
    if targets[0] not in ("http", "httpCustom"):
        raise _bad(f"{targets[0]} notifications are not emulated", ld=False)
    target = note[targets[0]]
    if not isinstance(target, dict) or not isinstance(target.get("url"), str):
        raise _bad(f"{targets[0]} url is missing", ld=False)
    if note.get("attrsFormat", "normalized") not in _V2_FORMATS:
        raise _bad(f"invalid attrsFormat: {note.get('attrsFormat')}", ld=False)
    if "attrs" in note and "exceptAttrs" in note:
        raise _bad("http notification has attrs and exceptAttrs", ld=False)
    if note.get("covered") and not note.get("attrs"):
        raise _bad("covered true cannot be used if notification attributes list is empty", ld=False)
    limit = note.get("maxFailsLimit")
    if limit is not None and (not isinstance(limit, int) or limit <= 0):
        raise _bad("maxFailsLimit must be a positive integer", ld=False)


def _check_v2_subject(subject: Any) -> None:
    if not isinstance(subject, dict):
        raise _bad("no subject for subscription specified", ld=False)
    for selector in subject.get("entities") or []:
        if not isinstance(selector, dict) or ("id" in selector) == ("idPattern" in selector):
            raise _bad("entity needs exactly one of id or idPattern", ld=False)
    condition = subject.get("condition")
    if condition is None:
        return
    if not isinstance(condition, dict) or not condition:
        raise _bad("condition is empty", ld=False)
    if "attrs" in condition and not condition["attrs"]:
        raise _bad("condition.attrs must not be empty", ld=False)
    if any(a not in _ALTERATIONS for a in condition.get("alterationTypes") or []):
        raise _bad("invalid alterationType", ld=False)


def _check_v2(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _bad("subscription must be a JSON object", ld=False)
    _check_v2_subject(body.get("subject"))
    _check_v2_notification(body.get("notification"))
    if body.get("status", "active") not in ("active", "inactive", "oneshot"):
        raise _bad(f"invalid status: {body.get('status')}", ld=False)
    if len(str(body.get("description", ""))) > 1024:
        raise _bad("description is longer than 1024 characters", ld=False)
    throttling = body.get("throttling", 0)
    if not isinstance(throttling, int | float) or throttling < 0:
        raise _bad("throttling must be a non-negative number", ld=False)
    _check_time(body.get("expires"), "expires", ld=False)
    return body


def _check_ld(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or body.get("type") != "Subscription":
        raise _bad("the type of a subscription must be 'Subscription'", ld=True)
    note = body.get("notification")
    if not isinstance(note, dict):
        raise _bad("notification is missing", ld=True)
    endpoint = note.get("endpoint")
    if not isinstance(endpoint, dict) or not isinstance(endpoint.get("uri"), str):
        raise _bad("notification.endpoint.uri is missing", ld=True)
    if note.get("format", "normalized") not in _LD_FORMATS:
        raise _bad(f"invalid notification format: {note.get('format')}", ld=True)
    if not body.get("entities") and not body.get("watchedAttributes"):
        raise _bad("entities or watchedAttributes is needed", ld=True)
    _check_time(body.get("expiresAt", body.get("expires")), "expiresAt", ld=True)
    return body


def _v2_view(sub: Subscription) -> dict[str, Any]:
    body = sub.body
    subject = dict(body.get("subject") or {})
    subject["condition"] = {
        "attrs": [],
        "notifyOnMetadataChange": True,
        **(subject.get("condition") or {}),
    }
    note = {"attrs": [], "onlyChangedAttrs": False, "attrsFormat": "normalized", "covered": False}
    note.update(body.get("notification") or {})
    counters = {
        "timesSent": sub.times_sent or None,
        "lastNotification": sub.last_notification,
        "lastSuccess": sub.last_success,
        "lastSuccessCode": sub.last_success_code,
        "lastFailure": sub.last_failure,
        "lastFailureReason": sub.last_failure_reason,
        "failsCounter": sub.fails or None,
    }
    note.update({k: v for k, v in counters.items() if v is not None})
    shown = {k: v for k, v in body.items() if k not in ("subject", "notification")}
    status = "expired" if sub.expired() else sub.status
    return {"id": sub.id, **shown, "subject": subject, "notification": note, "status": status}


def _ld_view(sub: Subscription) -> dict[str, Any]:
    body = {k: v for k, v in sub.body.items() if k != "jsonldContext"}
    note = dict(body.get("notification") or {})
    note.setdefault("format", "normalized")
    note["endpoint"] = {"accept": "application/json", **note.get("endpoint", {})}
    counters = {
        "status": "failed" if sub.fails else "ok",
        "timesSent": sub.times_sent or None,
        "lastNotification": sub.last_notification,
        "lastFailure": sub.last_failure,
        "lastSuccess": sub.last_success,
        "consecutiveErrors": sub.fails or None,
        "lastErrorReason": sub.last_failure_reason,
    }
    note.update({k: v for k, v in counters.items() if v is not None})
    status = "expired" if sub.expired() else sub.status
    return {
        "id": sub.id,
        **body,
        "status": status,
        "isActive": status == "active",
        "notification": note,
    }


def _patch(sub: Subscription, patch: Any) -> None:
    if not isinstance(patch, dict) or not patch:
        raise _bad("empty subscription patch", ld=sub.ld)
    merged = {**sub.body, **{k: v for k, v in patch.items() if k not in ("id", "status")}}
    if sub.ld:
        _check_ld({"type": "Subscription", **merged})
        if patch.get("isActive") is True:
            sub.status, sub.fails = "active", 0
        elif patch.get("isActive") is False:
            sub.status = "paused"
    else:
        _check_v2({**merged, "status": patch.get("status", "active")})
        if "status" in patch:
            sub.status = patch["status"]
    sub.body = merged


def _mine(broker: Broker, request: Request, sub_id: str, *, ld: bool) -> Subscription:
    """The subscription ``sub_id`` if it belongs to the request's tenant (else 404)."""
    sub = broker.subscriptions.get(sub_id)
    if sub is None or sub.ld != ld or sub.tenant != context(request, ld=ld).tenant:
        if ld:
            raise LdError(404, "ResourceNotFound", "subscription not found", sub_id)
        raise OrionError(404, "NotFound", "The requested subscription has not been found")
    return sub


def _collection_routes(router: APIRouter, broker: Broker, *, ld: bool) -> None:
    prefix = "/ngsi-ld/v1" if ld else "/v2"

    @router.post("/subscriptions", status_code=201, responses=created())
    async def create(request: Request) -> Response:
        ctx, body = context(request, ld=ld), await json_body(request, ld=ld)
        body = _check_ld(body) if ld else _check_v2(body)
        if ld:
            if str(body.get("id", "")) in broker.subscriptions:
                raise LdError(409, "AlreadyExists", "subscription already exists", body["id"])
            if (linked := ld_context(request, body)) is not None:
                body["@context"] = linked
        sub = broker.add_subscription(body, tenant=ctx.tenant, scope=ctx.scope, ld=ld)
        return Response(status_code=201, headers={"Location": f"{prefix}/subscriptions/{sub.id}"})

    @router.get("/subscriptions")
    async def list_subscriptions(request: Request) -> Response:
        ctx = context(request, ld=ld)
        subs = broker.visible(ctx.tenant, ld=ld)
        if not ld and request.headers.get("fiware-servicepath"):
            subs = [s for s in subs if s.scope == ctx.scope]
        shown, headers = page(subs, request, ld=ld)
        return JSONResponse([(_ld_view if ld else _v2_view)(s) for s in shown], headers=headers)


def _item_routes(router: APIRouter, broker: Broker, *, ld: bool) -> None:
    @router.get("/subscriptions/{sub_id:path}")
    async def read(request: Request, sub_id: str) -> Any:
        sub = _mine(broker, request, sub_id, ld=ld)
        return _ld_view(sub) if ld else _v2_view(sub)

    @router.patch("/subscriptions/{sub_id:path}", status_code=204)
    async def patch(request: Request, sub_id: str) -> Response:
        sub = _mine(broker, request, sub_id, ld=ld)
        _patch(sub, await json_body(request, ld=ld))
        return Response(status_code=204)

    @router.delete("/subscriptions/{sub_id:path}", status_code=204)
    async def delete(request: Request, sub_id: str) -> Response:
        broker.subscriptions.pop(_mine(broker, request, sub_id, ld=ld).id, None)
        return Response(status_code=204)


def subscription_routes(router: APIRouter, broker: Broker, *, ld: bool) -> None:
    """Add ``/subscriptions`` CRUD (v2 or NGSI-LD) to ``router``."""
    _collection_routes(router, broker, ld=ld)
    _item_routes(router, broker, ld=ld)
