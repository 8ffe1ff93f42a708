"""NGSI v2 entity operations of the emulator (``orion-api.md`` § Entities Operations, Attributes,
Attribute Value, Batch Operations ``POST /v2/op/update``).

Attribute types default as Orion's (``Number``, ``Text``, ``Boolean``, ``StructuredValue``,
``None``); metadata is merged on update (``overrideMetadata`` replaces it). An update that
changes no value or metadata is ``entityUpdate`` (``forcedUpdate`` makes it ``entityChange``).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request

from beats.fiware.emulator.broker import Broker
from beats.fiware.emulator.model import Change, Entity, OrionError, now
from beats.fiware.emulator.query import QueryError, compile_q
from beats.fiware.emulator.requests import Context, check_identifiers

__all__ = ["V2Entities", "attrs_param", "options", "parse_attr", "parse_entity", "query", "render"]

_NOT_FOUND = "The requested entity has not been found. Check type and id"
_ACTIONS = ("append", "appendStrict", "update", "delete", "replace")


def _type_of(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int | float):
        return "Number"
    return "Text" if isinstance(value, str) else "StructuredValue"


def parse_attr(raw: Any, key_values: bool) -> dict[str, Any]:
    if key_values or not isinstance(raw, dict):
        if not key_values:
            raise OrionError(400, "BadRequest", "attribute must be a JSON object")
        return {"type": _type_of(raw), "value": raw, "metadata": {}}
    value = raw.get("value")
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise OrionError(400, "BadRequest", "metadata must be a JSON object")
    meta = {
        k: {"type": m.get("type") or _type_of(m.get("value")), "value": m.get("value")}
        for k, m in metadata.items()
        if isinstance(m, dict)
    }
    return {"type": raw.get("type") or _type_of(value), "value": value, "metadata": meta}


def parse_entity(body: Any, key_values: bool) -> tuple[str, Any, dict[str, Any]]:
    if not isinstance(body, dict):
        raise OrionError(400, "BadRequest", "entity must be a JSON object")
    check_identifiers(body)
    attrs = {k: parse_attr(v, key_values) for k, v in body.items() if k not in ("id", "type")}
    return body["id"], body.get("type"), attrs


def _apply(
    entity: Entity, attrs: dict[str, Any], mode: str, *, override: bool = False
) -> tuple[frozenset[str], frozenset[str], dict[str, Any]]:
    """Apply ``attrs`` to ``entity``; (touched, changed, previous attribute objects)."""
    previous = {n: entity.attrs[n] for n in attrs if n in entity.attrs}
    if mode == "replace":
        previous = dict(entity.attrs)
        entity.attrs = {}
    if mode == "delete":
        for name in attrs:
            entity.attrs.pop(name, None)
        return frozenset(attrs), frozenset(attrs), previous
    changed = set(attrs) if mode == "replace" else set()
    for name, attr in attrs.items():
        old = entity.attrs.get(name)
        if old is not None and not override:
            attr = {**attr, "metadata": {**old.get("metadata", {}), **attr["metadata"]}}
        if old != attr:
            changed.add(name)
        entity.attrs[name] = attr
    if changed:
        entity.modified = now()
    return frozenset(attrs), frozenset(changed), previous


def _change(ctx: Context, entity: Entity, alteration: str, applied: Any, forced: bool) -> Change:
    touched, changed, previous = applied
    if alteration == "entityUpdate" and (changed or forced):
        alteration = "entityChange"
    return Change(
        entity.copy(),
        ctx.tenant,
        alteration,
        touched,
        changed,
        previous,
        forced,
        ctx.correlator,
        ctx.auth,
    )


class V2Entities:
    """Entity operations on one broker; each returns the changes to notify."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def one(self, ctx: Context, entity_id: str, entity_type: str | None = None) -> Entity:
        found = [
            e
            for e in self.broker.find(ctx.tenant, entity_id, ctx.scope)
            if entity_type is None or e.type == entity_type
        ]
        if not found:
            raise OrionError(404, "NotFound", _NOT_FOUND)
        if len(found) > 1:
            raise OrionError(
                409, "TooManyResults", "More than one matching entity. Please refine your query"
            )
        return found[0]

    def create(self, ctx: Context, body: Any, *, key_values: bool, upsert: bool) -> bool:
        entity_id, entity_type, attrs = parse_entity(body, key_values)
        store = self.broker.store(ctx.tenant, ld=False)
        if (entity_id, ctx.path) in store:
            if not upsert:
                raise OrionError(422, "Unprocessable", "Already Exists")
            self.update(ctx, store[(entity_id, ctx.path)], attrs, "append", forced=False)
            return False
        entity = Entity(entity_id, entity_type or "Thing", ctx.path)
        store[(entity_id, ctx.path)] = entity
        applied = _apply(entity, attrs, "append")
        self.broker.changed([_change(ctx, entity, "entityCreate", applied, False)])
        return True

    def update(
        self,
        ctx: Context,
        entity: Entity,
        attrs: dict[str, Any],
        mode: str,
        *,
        forced: bool,
        override: bool = False,
    ) -> None:
        """PATCH / POST / PUT attrs semantics (``mode``: an ``actionType``); Orion's 422s."""
        existing = set(entity.attrs)
        if mode == "appendStrict" and set(attrs) & existing:
            names = ", ".join(sorted(set(attrs) & existing))
            raise OrionError(
                422,
                "Unprocessable",
                f"one or more of the attributes in the request already exist: "
                f"{entity.id} - [ {names} ]",
            )
        missing = set(attrs) - existing if mode in ("update", "delete") else set()
        present = {k: v for k, v in attrs.items() if k not in missing}
        if present or not missing:
            applied = _apply(entity, present, mode, override=override)
            self.broker.changed([_change(ctx, entity, "entityUpdate", applied, forced)])
        if missing:
            error = "PartialUpdate" if present else "Unprocessable"
            names = ", ".join(sorted(missing))
            raise OrionError(422, error, f"do not exist: {entity.id} - [ {names} ]")

    def delete(self, ctx: Context, entity: Entity) -> None:
        del self.broker.store(ctx.tenant, ld=False)[(entity.id, entity.path)]
        change = Change(
            entity.copy(),
            ctx.tenant,
            "entityDelete",
            frozenset(entity.attrs),
            frozenset(entity.attrs),
            {},
            False,
            ctx.correlator,
            ctx.auth,
        )
        self.broker.changed([change])

    def batch_one(self, ctx: Context, body: Any, action: str, options: set[str]) -> str | None:
        """One entity of ``/v2/op/update``; the reason it failed, or ``None``."""
        key_values = "keyValues" in options
        entity_id, entity_type, attrs = parse_entity(body, key_values)
        found = [
            e
            for e in self.broker.find(ctx.tenant, entity_id, ctx.scope)
            if entity_type is None or e.type == entity_type
        ]
        label = f"{entity_id}/{entity_type}" if entity_type else entity_id
        if not found:
            if action in ("append", "appendStrict"):
                self.create(ctx, body, key_values=key_values, upsert=False)
                return None
            return f"{label} - [entity itself]"
        entity = found[0]
        if action == "delete" and not attrs:
            self.delete(ctx, entity)
            return None
        try:
            self.update(
                ctx,
                entity,
                attrs,
                action,
                forced="forcedUpdate" in options,
                override="overrideMetadata" in options,
            )
        except OrionError as error:
            return f"{label} - {error.description.split(' - ', 1)[-1]}"
        return None


def render(entity: Entity, options: set[str], attrs: list[str]) -> Any:
    chosen = {n: a for n, a in entity.attrs.items() if not attrs or n in attrs}
    if "values" in options:
        return [a["value"] for a in chosen.values()]
    if "keyValues" in options:
        return {"id": entity.id, "type": entity.type, **{n: a["value"] for n, a in chosen.items()}}
    return {"id": entity.id, "type": entity.type, **chosen}


def options(request: Request) -> set[str]:
    return {o for o in request.query_params.get("options", "").split(",") if o}


def attrs_param(request: Request) -> list[str]:
    return [a for a in request.query_params.get("attrs", "").split(",") if a]


def query(entities: list[Entity], request: Request) -> list[Entity]:
    params = request.query_params
    ids = set(params["id"].split(",")) if "id" in params else None
    types = set(params["type"].split(",")) if "type" in params else None
    selected = [
        e for e in entities if (ids is None or e.id in ids) and (types is None or e.type in types)
    ]
    if "idPattern" in params:
        pattern = re.compile(params["idPattern"])
        selected = [e for e in selected if pattern.fullmatch(e.id)]
    if "q" in params:
        try:
            predicate = compile_q(params["q"])
        except QueryError as exc:
            raise OrionError(400, "BadRequest", str(exc)) from None
        selected = [e for e in selected if predicate({n: a["value"] for n, a in e.attrs.items()})]
    return selected
