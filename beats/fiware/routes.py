"""``POST /notify`` (what the broker calls) and ``POST /writeback`` (results back to the broker).

``/notify`` answers 2xx only after the notification's events are committed to the log, 503
when they could not be (so the broker's failure counters mean something), 401 without the
subscription's secret header (nothing is stored), 413 beyond ``max_body_bytes`` (declared or
streamed: a chunked body is not read further than that), and 400 with the reason for malformed
input, which is kept in the dead-letter channel.
"""

from __future__ import annotations

import hmac
import logging
import re
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from beats.fiware.normalize import Notification, normalize
from beats.fiware.settings import FiwareSettings
from beats.fiware.subscriptions import SECRET_HEADER, SubscriptionKeeper
from common.bodies import BodyTooLarge, read_body
from common.eventlog import LogUnavailable
from common.jsonsafe import loads
from common.normalize import Rejected
from common.openapi import ErrorBody, error
from common.pipeline import DEAD_LETTER_CHANNEL, Pipeline

__all__ = ["fiware_router"]

_log = logging.getLogger(__name__)

# the bodies are read raw (format detection, size limits), so their schemas are declared here
_NOTIFY_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"subscriptionId": {"type": "string"}, "data": {"type": "array"}},
                }
            },
            "application/ld+json": {"schema": {"type": "object"}},
            "text/plain": {"schema": {"type": "string"}},
        }
    }
}
_TENANT = re.compile(r"[A-Za-z0-9_-]{1,50}")
_SERVICE_PATH = re.compile(r"/|(/[A-Za-z0-9_]{1,50}){1,10}")
"""One NGSI v2 service path, as an update takes it: up to 10 levels of up to 50 characters."""
_ENTITIES = {
    "type": "array",
    "items": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
}
_WRITEBACK_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        _ENTITIES,
                        {
                            "type": "object",
                            "properties": {
                                "entities": _ENTITIES,
                                "tenant": {"type": "string", "pattern": f"^{_TENANT.pattern}$"},
                            },
                            "required": ["entities"],
                        },
                    ]
                }
            }
        }
    }
}


class Committed(BaseModel):
    committed: int


class EntityResult(BaseModel):
    id: str
    ok: bool
    status: int
    error: Any = None


class Results(BaseModel):
    results: list[EntityResult]


_TOO_LARGE = error("The body is over --max-body-bytes (not read further)", ErrorBody)
_NOTIFY_RESPONSES: dict[int | str, Any] = {
    200: {"model": Committed, "description": "The notification's events are committed"},
    400: error("Malformed notification (kept in the dead-letter channel): the reason", ErrorBody),
    401: error(f"Missing or wrong {SECRET_HEADER} header (nothing is stored)", ErrorBody),
    413: _TOO_LARGE,
    503: error("The events could not be committed to the log (retry)", ErrorBody),
}
_WRITEBACK_RESPONSES: dict[int | str, Any] = {
    200: {"model": Results, "description": "Every entity was written"},
    207: {"model": Results, "description": "Some entities were not written: see each result"},
    400: error(
        "Not JSON, not a list of entities with string ids, or a tenant or Fiware-ServicePath "
        "the broker would not take",
        ErrorBody,
    ),
    401: error(
        "Wrong or missing bearer token (--writeback-token)",
        ErrorBody,
        headers=("WWW-Authenticate",),
    ),
    403: error("Write-back is off: no --writeback-token and no --writeback-open", ErrorBody),
    413: _TOO_LARGE,
    502: error("The broker did not answer (unreachable, or no answer within 30 s)", ErrorBody),
}


def fiware_router(
    settings: FiwareSettings, pipeline: Pipeline, keeper: SubscriptionKeeper
) -> APIRouter:
    router = APIRouter(tags=["fiware"])
    source = settings.orion_url

    @router.post("/notify", openapi_extra=_NOTIFY_BODY, responses=_NOTIFY_RESPONSES)
    async def notify(request: Request) -> Response:
        """Orion / NGSI-LD notifications (v2 and LD detected from headers and body)."""
        given = request.headers.get(SECRET_HEADER, "")
        if not keeper.secret or not hmac.compare_digest(given.encode(), keeper.secret.encode()):
            return JSONResponse({"error": f"missing or wrong {SECRET_HEADER}"}, 401)
        try:
            body = await read_body(request, settings.max_body_bytes)
        except BodyTooLarge as exc:
            return JSONResponse({"error": exc.detail}, 413)
        pipeline.received()
        notification = Notification(body, dict(request.headers), received_at=datetime.now(UTC))
        headers = {k: v for k, v in request.headers.items() if k.lower() != SECRET_HEADER.lower()}
        events = pipeline.guarded(
            lambda: normalize(notification, source=source, value_names=keeper.value_names),
            raw=body,
            source=source,
            context={"headers": headers},
        )
        failed = await _commit_or_503(pipeline, events)
        if failed is not None:
            return failed
        if events and events[0].channel == DEAD_LETTER_CHANNEL:
            return JSONResponse({"error": events[0].data["reason"]}, 400)
        return JSONResponse({"committed": len(events)}, 200)

    if settings.writeback_open:
        _log.warning(
            "fiware: --writeback-open: POST /writeback changes the broker's entities for ANYONE "
            "who can reach this beat, without a token; give --writeback-token(-file) instead"
        )

    @router.post("/writeback", openapi_extra=_WRITEBACK_BODY, responses=_WRITEBACK_RESPONSES)
    async def writeback(request: Request) -> Response:
        """Entity updates applied to the broker as batch upserts; results per entity. Needs
        ``Authorization: Bearer <--writeback-token>`` (refused without one configured, unless
        the beat runs with ``--writeback-open``)."""
        refused = _writeback_refused(settings, request.headers.get("authorization", ""))
        if refused is not None:
            pipeline.metrics.source_errors.labels("writeback").inc()
            return refused
        try:
            raw = await read_body(request, settings.max_body_bytes)
        except BodyTooLarge as exc:
            return _refuse(pipeline, exc.detail, 413)
        try:
            entities, tenant = _writeback_body(raw)
            scope = _scope(settings, tenant, request.headers)
        except Rejected as exc:
            return _refuse(pipeline, exc.reason, 400)
        try:
            results = await _write(settings, entities, scope)
        except httpx.HTTPError as exc:
            _log.warning(
                "fiware: write-back: %s: %s", settings.orion_url, exc or type(exc).__name__
            )
            return _refuse(pipeline, f"the broker did not answer: {exc!r}", 502)
        status = 200 if all(r["ok"] for r in results) else 207
        return JSONResponse({"results": results}, status)

    return router


def _writeback_body(raw: bytes) -> tuple[list[dict[str, Any]], str | None]:
    """The entities and tenant of a write-back body (:class:`Rejected`: why not). The tenant
    goes into a header (Fiware-Service, NGSILD-Tenant): Orion's form, checked here."""
    body = loads(raw, what="body")
    entities = body.get("entities") if isinstance(body, dict) else body
    if not isinstance(entities, list) or not all(
        isinstance(e, dict) and isinstance(e.get("id"), str) for e in entities
    ):
        raise Rejected("expected a list of entities with string ids")
    tenant = body.get("tenant") if isinstance(body, dict) else None
    if tenant is not None and not (isinstance(tenant, str) and _TENANT.fullmatch(tenant)):
        raise Rejected(f"tenant must match {_TENANT.pattern}")
    return entities, tenant


def _writeback_refused(settings: FiwareSettings, presented: str) -> Response | None:
    token = settings.writeback_token
    if token is None:
        if settings.writeback_open:
            return None
        return JSONResponse(
            {"error": "writeback is off: start the beat with --writeback-token(-file)"}, 403
        )
    expected = f"Bearer {token.get_secret_value()}".encode()
    if hmac.compare_digest(presented.encode(), expected):
        return None
    return JSONResponse(
        {"error": "invalid_token"},
        401,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def _refuse(pipeline: Pipeline, reason: str, status: int) -> Response:
    """A write-back request that is refused: counted (``source_errors{kind="writeback"}``)."""
    pipeline.metrics.source_errors.labels("writeback").inc()
    return JSONResponse({"error": reason}, status)


async def _commit_or_503(pipeline: Pipeline, events: list[Any]) -> Response | None:
    try:
        await pipeline.commit(events)
    except LogUnavailable as exc:
        return JSONResponse({"error": f"not committed: {exc}"}, 503)
    return None


def _scope(settings: FiwareSettings, tenant: str | None, headers: Any) -> dict[str, str]:
    """The tenant and service path headers of the broker's requests (:class:`Rejected` for
    ones the broker would not take: they are passed on from the caller's headers)."""
    if settings.ngsi == "ld":
        link = f'<{settings.ld_context}>; rel="http://www.w3.org/ns/json-ld#context"'
        return {"Link": link, **({"NGSILD-Tenant": tenant} if tenant else {})}
    service = tenant or headers.get("fiware-service")
    path = headers.get("fiware-servicepath") or settings.fiware_servicepath
    if service is not None and not _TENANT.fullmatch(service):
        raise Rejected(f"Fiware-Service must match {_TENANT.pattern}")
    if not _SERVICE_PATH.fullmatch(path):
        raise Rejected(
            "Fiware-ServicePath must be one path of up to 10 levels of up to 50 letters, "
            "digits or underscores (/rooms/floor_1)"
        )
    return {"Fiware-ServicePath": path, **({"Fiware-Service": service} if service else {})}


async def _write(
    settings: FiwareSettings, entities: list[dict[str, Any]], scope: dict[str, str]
) -> list[dict[str, Any]]:
    ld = settings.ngsi == "ld"
    async with httpx.AsyncClient(base_url=settings.orion_url, timeout=30, headers=scope) as http:
        if ld:
            return await _write_ld(http, entities)
        response = await http.post(
            "/v2/op/update", json={"actionType": "append", "entities": entities}
        )
        if response.status_code < 300:
            return [{"id": e["id"], "ok": True, "status": response.status_code} for e in entities]
        return [await _write_one(http, e) for e in entities]


async def _write_one(http: httpx.AsyncClient, entity: dict[str, Any]) -> dict[str, Any]:
    response = await http.post("/v2/op/update", json={"actionType": "append", "entities": [entity]})
    result: dict[str, Any] = {
        "id": entity["id"],
        "ok": response.status_code < 300,
        "status": response.status_code,
    }
    if not result["ok"]:
        result["error"] = response.text[:500]
    return result


async def _write_ld(
    http: httpx.AsyncClient, entities: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    response = await http.post(
        "/ngsi-ld/v1/entityOperations/upsert", json=entities, params={"options": "update"}
    )
    if response.status_code in (201, 204):
        return [{"id": e["id"], "ok": True, "status": response.status_code} for e in entities]
    errors: dict[str, Any] = {}
    if response.status_code == 207:
        errors = {e.get("entityId"): e.get("error") for e in response.json().get("errors", [])}
    return [
        {
            "id": e["id"],
            "ok": e["id"] not in errors and response.status_code == 207,
            "status": response.status_code,
            **({"error": errors[e["id"]]} if e["id"] in errors else {}),
        }
        for e in entities
    ]
