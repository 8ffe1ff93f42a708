"""What the OpenAPI documents declare beyond what FastAPI infers from the code, kept next to it.

FastAPI infers parameters and 200 bodies; the SSE streams, the Prometheus text, every error a
route really answers (with its body) and the security schemes are declared here, once, and the
routes use them through FastAPI's own means (``responses=``, ``response_class=``, security
dependencies). The services answer a malformed parameter with 400 and ``{"detail": ...}``,
never FastAPI's 422: :func:`install` sets that handler and removes the 422 FastAPI would
declare. The documents are checked against the running services by Schemathesis
(``tests/fuzz/test_http_schema.py``).
"""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

__all__ = [
    "DOCS_ASSETS_DIR",
    "PROMETHEUS_TEXT",
    "SSE_FRAMES",
    "Detail",
    "ErrorBody",
    "OAuthError",
    "error",
    "errors",
    "install",
    "prometheus_ok",
    "sse_ok",
]

DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
"""Swagger UI's and ReDoc's files, as the fastapi-offline package ships them (the beats and
emulators serve them through ``FastAPIOffline``; the gateway, whose pages are behind its token
check, mounts them itself)."""

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

SSE_FRAMES = (
    "An endless Server-Sent Events stream (`text/event-stream`, UTF-8). It opens with a "
    "`retry:` frame; each event is a frame `id: <position>`, `event: <CloudEvents type>`, "
    "`data: <the CloudEvent as one line of JSON>`, ended by a blank line. A `beats.gap` event "
    "(no `id:`) says that events were expired or lost before the resume position; comment "
    "lines (`:`) are heartbeats; when the client falls too far behind, the stream ends with a "
    "`retry:` hint and the client resumes with `Last-Event-ID`."
)


class Detail(BaseModel):
    """The body of an error answered by the framework or a route (``HTTPException``)."""

    detail: str


class ErrorBody(BaseModel):
    """The body of an error a route answers itself."""

    error: str


class OAuthError(BaseModel):
    """An RFC 6750 error (``WWW-Authenticate: Bearer`` challenge) or a busy answer."""

    error: str
    error_description: str


def error(
    description: str, model: type[BaseModel] = Detail, *, headers: tuple[str, ...] = ()
) -> dict[str, Any]:
    """One ``responses=`` entry: an error with its JSON body and the headers it always has."""
    entry: dict[str, Any] = {"description": description, "model": model}
    if headers:
        entry["headers"] = {name: {"schema": {"type": "string"}} for name in headers}
    return entry


def sse_ok(what: str) -> dict[str, Any]:
    """The 200 of a Server-Sent Events route."""
    return {
        "description": f"{what}. {SSE_FRAMES}",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }


def prometheus_ok() -> dict[str, Any]:
    return {
        "description": "Prometheus text exposition format 0.0.4 "
        f"(`Content-Type: {PROMETHEUS_TEXT}`).",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }


async def _bad_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in exc.errors()
    )
    return JSONResponse({"detail": problems}, status_code=400)


def install(app: FastAPI) -> None:
    """A malformed parameter is a 400 with a :class:`Detail` body, and the document says so
    (FastAPI's generated 422 becomes that 400)."""
    app.add_exception_handler(RequestValidationError, _bad_request)

    generate = app.openapi  # FastAPI's, which caches the document in app.openapi_schema

    def document() -> dict[str, Any]:
        return _validation_as_400(generate())

    app.openapi = document  # type: ignore[method-assign]


def _validation_as_400(schema: dict[str, Any]) -> dict[str, Any]:
    """Idempotent: the cached document is passed again at each call."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("Detail", Detail.model_json_schema())
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None and "400" not in responses:
                responses["400"] = {
                    "description": "A malformed parameter",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Detail"}}
                    },
                }
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    return schema


def errors(model: Any, *statuses: int, why: str = "") -> dict[int | str, Any]:
    """``responses=`` entries: ``statuses`` answered with a ``model`` body (a model or a union
    of models; an emulator's errors, declared once on its router)."""
    suffix = f": {why}" if why else ""
    return {
        status: {"model": model, "description": HTTPStatus(status).phrase + suffix}
        for status in statuses
    }
