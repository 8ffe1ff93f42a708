"""The bodies, statuses and credentials of the Ditto emulator's HTTP API, for its OpenAPI
document."""

from __future__ import annotations

from typing import Any

from fastapi import Security
from fastapi.params import Depends
from fastapi.security import APIKeyQuery, HTTPBasic, HTTPBearer
from pydantic import BaseModel

from common.openapi import Detail, errors

__all__ = ["API", "BURST", "CREDENTIALS", "MESSAGE", "WRITE"]


class DittoErrorBody(BaseModel):
    """Ditto's error JSON (:class:`~.things.DittoError`)."""

    status: int
    error: str
    message: str


CREDENTIALS: list[Depends] = [
    Security(HTTPBasic(auto_error=False, description="--username / --password")),
    Security(HTTPBearer(auto_error=False, description="--token")),
    Security(APIKeyQuery(name="access_token", auto_error=False, description="--token")),
]
"""Any one of them (they declare the schemes; the emulator checks them itself)."""

API: dict[int | str, Any] = {
    **errors(DittoErrorBody, 400, 415),
    **errors(DittoErrorBody | Detail, 404, why="no such thing, or a path no route matches"),
    401: {
        "model": DittoErrorBody,
        "description": "Missing or invalid credentials",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
}
WRITE: dict[int | str, Any] = {
    **API,
    201: {
        "description": "Created: the new value",
        "headers": {"Location": {"schema": {"type": "string"}}},
    },
    204: {"description": "Modified"},
}
MESSAGE: dict[int | str, Any] = {
    **API,
    202: {"description": "Sent; no live subscriber answered in time (or none is asked to)"},
    408: {"model": DittoErrorBody, "description": "No response within the timeout"},
    "default": {"description": "The live subscriber's answer: its status, body and type"},
}
BURST: dict[int | str, Any] = errors(
    DittoErrorBody | Detail, 400, why="a bad thing id, or a malformed parameter"
)
