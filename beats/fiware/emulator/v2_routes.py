"""The NGSI v2 HTTP routes of the emulator: ``/v2/entities…`` and ``/v2/op/update``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from beats.fiware.emulator.apidoc import V2_ERRORS, no_content
from beats.fiware.emulator.broker import Broker
from beats.fiware.emulator.model import OrionError, in_scope
from beats.fiware.emulator.requests import context, json_body, page
from beats.fiware.emulator.v2_entities import (
    V2Entities,
    attrs_param,
    options,
    parse_attr,
    parse_entity,
    query,
    render,
)

__all__ = ["v2_routes"]

_ACTIONS = ("append", "appendStrict", "update", "delete", "replace")


def _no_content() -> Response:
    return Response(status_code=204)


def _attribute_routes(router: APIRouter, ops: V2Entities) -> None:
    @router.get("/entities/{entity_id}/attrs/{attr}")
    async def get_attr(request: Request, entity_id: str, attr: str) -> Any:
        entity = ops.one(context(request), entity_id, request.query_params.get("type"))
        if attr not in entity.attrs:
            raise OrionError(404, "NotFound", "The entity does not have such an attribute")
        return entity.attrs[attr]

    @router.put("/entities/{entity_id}/attrs/{attr}", status_code=204)
    async def put_attr(request: Request, entity_id: str, attr: str) -> Response:
        ctx, body = context(request), await json_body(request)
        entity = ops.one(ctx, entity_id, request.query_params.get("type"))
        ops.update(ctx, entity, {attr: parse_attr(body, False)}, "update", forced=False)
        return _no_content()

    @router.delete("/entities/{entity_id}/attrs/{attr}", status_code=204)
    async def delete_attr(request: Request, entity_id: str, attr: str) -> Response:
        ctx = context(request)
        entity = ops.one(ctx, entity_id, request.query_params.get("type"))
        ops.update(ctx, entity, {attr: {}}, "delete", forced=False)
        return _no_content()


def _value_routes(router: APIRouter, ops: V2Entities) -> None:
    @router.get("/entities/{entity_id}/attrs/{attr}/value")
    async def get_value(request: Request, entity_id: str, attr: str) -> Any:
        entity = ops.one(context(request), entity_id, request.query_params.get("type"))
        if attr not in entity.attrs:
            raise OrionError(404, "NotFound", "The entity does not have such an attribute")
        return entity.attrs[attr]["value"]

    @router.put("/entities/{entity_id}/attrs/{attr}/value", status_code=204)
    async def put_value(request: Request, entity_id: str, attr: str) -> Response:
        ctx = context(request)
        entity = ops.one(ctx, entity_id, request.query_params.get("type"))
        if request.headers.get("content-type", "").startswith("text/plain"):
            value: Any = (await request.body()).decode()
        else:
            value = await json_body(request)
        old = entity.attrs.get(attr, {})
        new = {"type": old.get("type"), "value": value, "metadata": {}}
        ops.update(ctx, entity, {attr: new}, "update", forced=False)
        return _no_content()


def _entity_routes(router: APIRouter, ops: V2Entities) -> None:
    @router.post("/entities", status_code=201, responses=no_content("Upserted"))
    async def create(request: Request) -> Response:
        ctx, body, opts = context(request), await json_body(request), options(request)
        created = ops.create(ctx, body, key_values="keyValues" in opts, upsert="upsert" in opts)
        location = f"/v2/entities/{body['id']}?type={body.get('type') or 'Thing'}"
        return Response(status_code=201 if created else 204, headers={"Location": location})

    @router.get("/entities")
    async def list_entities(request: Request) -> Response:
        ctx = context(request)
        entities = [
            e
            for e in ops.broker.store(ctx.tenant, ld=False).values()
            if in_scope(e.path, ctx.scope)
        ]
        shown, headers = page(query(entities, request), request)
        body = [render(e, options(request), attrs_param(request)) for e in shown]
        return JSONResponse(body, headers=headers)

    @router.get("/entities/{entity_id}")
    async def read(request: Request, entity_id: str) -> Any:
        entity = ops.one(context(request), entity_id, request.query_params.get("type"))
        return render(entity, options(request), attrs_param(request))

    @router.get("/entities/{entity_id}/attrs")
    async def read_attrs(request: Request, entity_id: str) -> Any:
        entity = ops.one(context(request), entity_id, request.query_params.get("type"))
        rendered = render(entity, options(request), attrs_param(request))
        if isinstance(rendered, dict):
            return {k: v for k, v in rendered.items() if k not in ("id", "type")}
        return rendered

    @router.delete("/entities/{entity_id}", status_code=204)
    async def delete(request: Request, entity_id: str) -> Response:
        ctx = context(request)
        ops.delete(ctx, ops.one(ctx, entity_id, request.query_params.get("type")))
        return _no_content()


def _attrs_route(router: APIRouter, ops: V2Entities, method: str, mode: str) -> None:
    async def attrs(request: Request, entity_id: str) -> Response:
        ctx, body, opts = context(request), await json_body(request), options(request)
        entity = ops.one(ctx, entity_id, request.query_params.get("type"))
        if not isinstance(body, dict):
            raise OrionError(400, "BadRequest", "attributes must be a JSON object")
        parsed = {"id": entity.id, **body}
        _, _, new = parse_entity(parsed, "keyValues" in opts)
        actual = "appendStrict" if mode == "append" and "append" in opts else mode
        ops.update(
            ctx,
            entity,
            new,
            actual,
            forced="forcedUpdate" in opts,
            override="overrideMetadata" in opts,
        )
        return _no_content()

    router.add_api_route("/entities/{entity_id}/attrs", attrs, methods=[method], status_code=204)


def _batch_route(router: APIRouter, ops: V2Entities) -> None:
    @router.post("/op/update", status_code=204)
    async def batch(request: Request) -> Response:
        ctx, body = context(request), await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("entities"), list):
            raise OrionError(400, "BadRequest", "entities field must be an array")
        action = body.get("actionType")
        if action not in _ACTIONS:
            raise OrionError(400, "BadRequest", f"invalid update action type: {action}")
        failures = [ops.batch_one(ctx, e, action, options(request)) for e in body["entities"]]
        failed = [f for f in failures if f is not None]
        if not failed:
            return _no_content()
        description = "do not exist: " + ", ".join(failed)
        if len(failed) < len(failures):
            raise OrionError(422, "PartialUpdate", description)
        if action in ("update", "delete", "replace") and all(
            "[entity itself]" in f for f in failed
        ):
            raise OrionError(404, "NotFound", description)
        raise OrionError(422, "Unprocessable", description)


def v2_routes(broker: Broker) -> APIRouter:
    router, ops = APIRouter(prefix="/v2", responses=V2_ERRORS), V2Entities(broker)
    _entity_routes(router, ops)
    for method, mode in (("POST", "append"), ("PATCH", "update"), ("PUT", "replace")):
        _attrs_route(router, ops, method, mode)
    _attribute_routes(router, ops)
    _value_routes(router, ops)
    _batch_route(router, ops)
    return router
