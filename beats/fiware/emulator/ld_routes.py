"""The NGSI-LD entity routes of the emulator: ``/ngsi-ld/v1/entities…`` and
``/ngsi-ld/v1/entityOperations/{create,upsert,update,delete}`` (as in the FIWARE NGSI-LD
tutorials and Orion-LD's tests).

Attributes may be sent normalized, concise or simplified and are stored normalized: a bare value
is a ``Property`` (a ``GeoProperty`` when it is GeoJSON), ``{"object"}`` a ``Relationship``,
``{"languageMap"}`` a ``LanguageProperty``. Every write that touches attributes notifies
(``watchedAttributes`` select which); deleting an entity does not. Terms are not expanded:
``@context`` is kept as given (no JSON-LD processing).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from beats.fiware.emulator.apidoc import LD_ERRORS, created
from beats.fiware.emulator.broker import Broker
from beats.fiware.emulator.model import Change, Entity, LdError, now
from beats.fiware.emulator.query import QueryError, compile_q
from beats.fiware.emulator.requests import Context, context, json_body, page
from beats.fiware.emulator.subscriptions import subscription_routes
from beats.fiware.shape import is_geojson

__all__ = ["ld_routes"]

_KINDS = {
    "object": "Relationship",
    "languageMap": "LanguageProperty",
    "vocab": "VocabProperty",
    "json": "JsonProperty",
    "valueList": "ListProperty",
    "objectList": "ListRelationship",
}
_ENTITY_MEMBERS = ("id", "type", "@context", "scope")


def _expand(raw: Any) -> Any:
    """One attribute in any form → normalized (a list: one per ``datasetId`` instance)."""
    if isinstance(raw, list) and raw and all(isinstance(i, dict) and "type" in i for i in raw):
        return [_expand(i) for i in raw]
    if not isinstance(raw, dict) or is_geojson(raw):
        return {"type": "GeoProperty" if is_geojson(raw) else "Property", "value": raw}
    if "type" in raw and raw["type"] in (*_KINDS.values(), "Property", "GeoProperty"):
        return raw
    kind = next((k for key, k in _KINDS.items() if key in raw), None)
    if kind is None and "value" not in raw:
        return {"type": "Property", "value": raw}
    kind = kind or ("GeoProperty" if is_geojson(raw.get("value")) else "Property")
    return {"type": kind, **{k: v for k, v in raw.items() if k != "type"}}


def _attrs(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise LdError(400, "BadRequestData", "the payload must be a JSON object")
    return {k: _expand(v) for k, v in body.items() if k not in _ENTITY_MEMBERS}


def _render(entity: Entity, request: Request) -> dict[str, Any]:
    options = request.query_params.get("options", "").split(",")
    wanted = [a for a in request.query_params.get("attrs", "").split(",") if a]
    attrs = {k: v for k, v in entity.attrs.items() if not wanted or k in wanted}
    if "keyValues" in options or "simplified" in options:
        attrs = {
            k: (v.get("value", v.get("object")) if isinstance(v, dict) else v)
            for k, v in attrs.items()
        }
    out = {"id": entity.id, "type": entity.type, **attrs}
    if "sysAttrs" in options:
        out.update(createdAt=entity.created, modifiedAt=entity.modified)
    return out


class LdEntities:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def get(self, ctx: Context, entity_id: str) -> Entity:
        entity = self.broker.store(ctx.tenant, ld=True).get((entity_id, "/"))
        if entity is None:
            raise LdError(404, "ResourceNotFound", "Entity does not exist", entity_id)
        return entity

    def write(self, ctx: Context, entity: Entity, attrs: dict[str, Any], *, created: bool) -> None:
        previous = {n: entity.attrs[n] for n in attrs if n in entity.attrs}
        entity.attrs.update(attrs)
        entity.modified = now()
        alteration = "entityCreate" if created else "entityChange"
        touched = frozenset(attrs) if attrs or not created else frozenset()
        change = Change(
            entity.copy(),
            ctx.tenant,
            alteration,
            touched,
            touched,
            previous,
            False,
            ctx.correlator,
            ctx.auth,
        )
        self.broker.changed([change])

    def create(self, ctx: Context, body: Any, *, upsert: str | None = None) -> bool:
        if not isinstance(body, dict) or not isinstance(body.get("id"), str) or "type" not in body:
            raise LdError(400, "BadRequestData", "an entity needs an id and a type")
        store = self.broker.store(ctx.tenant, ld=True)
        existing = store.get((body["id"], "/"))
        if existing is not None:
            if upsert is None:
                raise LdError(409, "AlreadyExists", "Entity already exists", body["id"])
            if upsert == "replace":
                existing.attrs = {}
            self.write(ctx, existing, _attrs(body), created=False)
            return False
        entity = Entity(body["id"], body["type"], "/", ld=True)
        store[(entity.id, "/")] = entity
        self.write(ctx, entity, _attrs(body), created=True)
        return True

    def update(self, ctx: Context, entity: Entity, body: Any) -> list[str]:
        """PATCH semantics: existing attributes only; the names not updated."""
        attrs = _attrs(body)
        missing = [n for n in attrs if n not in entity.attrs]
        present = {n: a for n, a in attrs.items() if n in entity.attrs}
        if present:
            self.write(ctx, entity, present, created=False)
        return missing


def _query(entities: list[Entity], request: Request) -> list[Entity]:
    params = request.query_params
    if "type" in params:
        entities = [e for e in entities if e.type in params["type"].split(",")]
    if "id" in params:
        entities = [e for e in entities if e.id in params["id"].split(",")]
    if "q" in params:
        try:
            predicate = compile_q(params["q"], ld=True)
        except QueryError as exc:
            raise LdError(400, "BadRequestData", "Invalid q", str(exc)) from None
        entities = [
            e
            for e in entities
            if predicate(
                {
                    n: a.get("value", a.get("object"))
                    for n, a in e.attrs.items()
                    if isinstance(a, dict)
                }
            )
        ]
    return entities


_PARTIAL: dict[int | str, Any] = {207: {"description": "Some attributes were not updated"}}
_BATCH: dict[int | str, Any] = {
    201: {"description": "Created (create, upsert): the ids"},
    207: {"description": "Some entities failed: successes and errors"},
}


def _entity_routes(router: APIRouter, ops: LdEntities) -> None:
    @router.post("/entities", status_code=201, responses=created())
    async def create(request: Request) -> Response:
        body = await json_body(request, ld=True)
        ops.create(context(request, ld=True), body)
        return Response(status_code=201, headers={"Location": f"/ngsi-ld/v1/entities/{body['id']}"})

    @router.get("/entities")
    async def list_entities(request: Request) -> Response:
        ctx = context(request, ld=True)
        found = _query(list(ops.broker.store(ctx.tenant, ld=True).values()), request)
        shown, headers = page(found, request, ld=True)
        return JSONResponse([_render(e, request) for e in shown], headers=headers)

    @router.get("/entities/{entity_id}")
    async def read(request: Request, entity_id: str) -> Any:
        return _render(ops.get(context(request, ld=True), entity_id), request)

    @router.delete("/entities/{entity_id}", status_code=204)
    async def delete(request: Request, entity_id: str) -> Response:
        ctx = context(request, ld=True)
        ops.get(ctx, entity_id)
        del ops.broker.store(ctx.tenant, ld=True)[(entity_id, "/")]
        return Response(status_code=204)


def _attribute_routes(router: APIRouter, ops: LdEntities) -> None:
    @router.post("/entities/{entity_id}/attrs", status_code=204)
    async def append(request: Request, entity_id: str) -> Response:
        ctx, body = context(request, ld=True), await json_body(request, ld=True)
        entity = ops.get(ctx, entity_id)
        attrs = _attrs(body)
        if "noOverwrite" in request.query_params.get("options", ""):
            attrs = {n: a for n, a in attrs.items() if n not in entity.attrs}
        ops.write(ctx, entity, attrs, created=False)
        return Response(status_code=204)

    @router.patch("/entities/{entity_id}/attrs", status_code=204, responses=_PARTIAL)
    async def update(request: Request, entity_id: str) -> Response:
        ctx, body = context(request, ld=True), await json_body(request, ld=True)
        missing = ops.update(ctx, ops.get(ctx, entity_id), body)
        if not missing:
            return Response(status_code=204)
        updated = [n for n in _attrs(body) if n not in missing]
        not_updated = [{"attributeName": n, "reason": "attribute does not exist"} for n in missing]
        return JSONResponse({"updated": updated, "notUpdated": not_updated}, 207)

    @router.patch("/entities/{entity_id}/attrs/{attr}", status_code=204)
    async def update_one(request: Request, entity_id: str, attr: str) -> Response:
        ctx, body = context(request, ld=True), await json_body(request, ld=True)
        if ops.update(ctx, ops.get(ctx, entity_id), {attr: body}):
            raise LdError(404, "ResourceNotFound", "Attribute not found", attr)
        return Response(status_code=204)

    @router.delete("/entities/{entity_id}/attrs/{attr}", status_code=204)
    async def delete_one(request: Request, entity_id: str, attr: str) -> Response:
        entity = ops.get(context(request, ld=True), entity_id)
        if entity.attrs.pop(attr, None) is None:
            raise LdError(404, "ResourceNotFound", "Attribute not found", attr)
        return Response(status_code=204)


def _batch_routes(router: APIRouter, ops: LdEntities) -> None:
    @router.post("/entityOperations/{operation}", status_code=204, responses=_BATCH)
    async def batch(request: Request, operation: str) -> Response:
        ctx, body = context(request, ld=True), await json_body(request, ld=True)
        if operation not in ("create", "upsert", "update", "delete") or not isinstance(body, list):
            raise LdError(400, "BadRequestData", "a JSON array of entities (ids for delete)")
        mode = request.query_params.get("options", "replace" if operation == "upsert" else "")
        success, errors = [], []
        for item in body:
            try:
                created = _batch_one(ops, ctx, operation, item, mode)
            except LdError as error:
                errors.append(
                    {
                        "entityId": _id_of(item),
                        "error": {
                            "type": f"https://uri.etsi.org/ngsi-ld/errors/{error.kind}",
                            "title": error.title,
                            "status": error.status,
                        },
                    }
                )
                continue
            if created or operation in ("create", "update", "delete"):
                success.append(_id_of(item))
        if errors:
            return JSONResponse({"success": success, "errors": errors}, 207)
        if operation == "create" or (operation == "upsert" and success):
            return JSONResponse(success, 201)
        return Response(status_code=204)


def _id_of(item: Any) -> Any:
    return item.get("id") if isinstance(item, dict) else item


def _batch_one(ops: LdEntities, ctx: Context, operation: str, item: Any, mode: str) -> bool:
    if operation == "delete":
        ops.get(ctx, str(item))
        del ops.broker.store(ctx.tenant, ld=True)[(str(item), "/")]
        return False
    if operation == "create":
        return ops.create(ctx, item)
    if operation == "upsert":
        return ops.create(ctx, item, upsert="update" if mode == "update" else "replace")
    ops.update(ctx, ops.get(ctx, str(_id_of(item))), item)
    return False


def ld_routes(broker: Broker) -> APIRouter:
    router, ops = APIRouter(prefix="/ngsi-ld/v1", responses=LD_ERRORS), LdEntities(broker)
    _entity_routes(router, ops)
    _attribute_routes(router, ops)
    _batch_routes(router, ops)
    subscription_routes(router, broker, ld=True)
    return router
