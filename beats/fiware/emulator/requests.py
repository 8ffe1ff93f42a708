"""What every emulator route needs from a request: its JSON body, tenant, paths, correlator."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from beats.fiware.emulator.model import LdError, OrionError, parse_scope, parse_tenant, update_path

__all__ = ["Context", "check_identifiers", "context", "json_body", "ld_context", "page"]

_FORBIDDEN = set("<>\"'=;()")


@dataclass(frozen=True)
class Context:
    tenant: str | None
    path: str  # for updates
    scope: list[str]  # for queries and subscriptions
    correlator: str
    auth: dict[str, str] = field(default_factory=dict)


def context(request: Request, *, ld: bool = False) -> Context:
    headers = request.headers
    auth = {
        k: headers[k.lower()] for k in ("X-Auth-Token", "Authorization") if k.lower() in headers
    }
    if ld:
        tenant = parse_tenant(
            headers.get("ngsild-tenant") or headers.get("fiware-service"), ld=True
        )
        return Context(tenant, "/", ["/#"], _correlator(request), auth)
    raw_path = headers.get("fiware-servicepath")
    scope = parse_scope(raw_path)
    path = (
        update_path(raw_path) if raw_path and "#" not in raw_path and "," not in raw_path else "/"
    )
    return Context(
        parse_tenant(headers.get("fiware-service")), path, scope, _correlator(request), auth
    )


def _correlator(request: Request) -> str:
    found = getattr(request.state, "correlator", None)
    return found if isinstance(found, str) else str(uuid.uuid4())


def _check_forbidden(value: Any, where: str) -> None:
    """``orion-api.md`` § General syntax restrictions (ids, types, names and text values)."""
    if isinstance(value, str) and _FORBIDDEN & set(value):
        raise OrionError(400, "BadRequest", f"Invalid characters in {where}")


async def json_body(request: Request, *, ld: bool = False) -> Any:
    """The request's JSON, with Orion's (or NGSI-LD's) errors for a wrong type or bad JSON."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    allowed = ("application/json", "application/ld+json") if ld else ("application/json",)
    if content_type not in allowed:
        if ld:
            raise LdError(415, "UnsupportedMediaType", f"unsupported Content-Type {content_type}")
        raise OrionError(415, "UnsupportedMediaType", f"not supported content type: {content_type}")
    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError):
        if ld:
            raise LdError(400, "InvalidRequest", "JSON Parse Error") from None
        raise OrionError(400, "ParseError", "Errors found in incoming JSON buffer") from None
    ld_json = ld and content_type == "application/ld+json"
    if ld_json and isinstance(body, dict) and "@context" not in body:
        raise LdError(400, "BadRequestData", "@context missing in JSON payload")
    return body


def ld_context(request: Request, body: Any) -> Any:
    """The request's ``@context``: in the body, else in a JSON-LD ``Link`` header."""
    if isinstance(body, dict) and "@context" in body:
        return body["@context"]
    link = request.headers.get("link", "")
    if link.startswith("<") and ">" in link:
        return link[1 : link.index(">")]
    return None


def page(
    items: list[Any], request: Request, *, ld: bool = False
) -> tuple[list[Any], dict[str, str]]:
    """``limit`` (default 20, max 1000) / ``offset`` and ``options=count`` (``orion-api.md``
    § Pagination; NGSI-LD: ``count=true`` → ``NGSILD-Results-Count``)."""
    params = request.query_params
    try:
        limit = int(params.get("limit", 20))
        offset = int(params.get("offset", 0))
        if not 0 < limit <= 1000 or offset < 0:
            raise ValueError(limit, offset)
    except ValueError:
        if ld:
            raise LdError(400, "BadRequestData", "Bad pagination: limit 1..1000") from None
        raise OrionError(400, "BadRequest", "Bad pagination limit: /1..1000/") from None
    headers: dict[str, str] = {}
    options = params.get("options", "").split(",")
    if "count" in options:
        headers["Fiware-Total-Count"] = str(len(items))
    if ld and params.get("count") == "true":
        headers["NGSILD-Results-Count"] = str(len(items))
    return items[offset : offset + limit], headers


def check_identifiers(entity: dict[str, Any]) -> None:
    """Entity id / type / attribute names: ``orion-api.md`` § Identifiers syntax restrictions."""
    for where, value in (("entity id", entity.get("id")), ("entity type", entity.get("type"))):
        if value is None and where == "entity type":
            continue
        if not isinstance(value, str) or not 0 < len(value) <= 256 or set(value) & set(" &?/#"):
            raise OrionError(400, "BadRequest", f"Invalid characters in {where}")
        _check_forbidden(value, where)
    for name in entity:
        if name not in ("id", "type"):
            _check_forbidden(name, "attribute name")
