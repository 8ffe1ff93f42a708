"""The bodies and statuses of the OpenCTI emulator's HTTP API, for its OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from common.openapi import Detail, ErrorBody, error, sse_ok

__all__ = ["CONTROL", "GRAPHQL", "MARKINGS", "STREAM"]


class GraphqlError(BaseModel):
    message: str
    extensions: dict[str, Any]


class GraphqlAnswer(BaseModel):
    """A GraphQL response: ``data``, and ``errors`` when the query failed."""

    data: Any = None
    errors: list[GraphqlError] | None = None


class Refused(BaseModel):
    """OpenCTI's refusal (the reason it puts in the HTTP reason phrase)."""

    status: int
    statusMessage: str  # noqa: N815 (OpenCTI's name)


GRAPHQL: dict[int | str, Any] = {
    200: {"model": GraphqlAnswer, "description": "The answer (an AUTH_REQUIRED error in it too)"},
    400: {"model": GraphqlAnswer, "description": "No query, or one that does not validate"},
}
STREAM: dict[int | str, Any] = {
    200: sse_ok("OpenCTI's live stream (its frames: id, event, data)"),
    401: {"model": Refused, "description": "Not authenticated, or no such stream"},
    404: error("A path no route matches"),
    410: {"model": Refused, "description": "The live stream is stopped"},
    500: {"model": Refused, "description": "Recovery asked without a start (OpenCTI's answer)"},
}
CONTROL: dict[int | str, Any] = {
    404: {"model": ErrorBody | Detail, "description": "The action is not start or stop"}
}
MARKINGS: dict[int | str, Any] = {
    400: {
        "model": ErrorBody | Detail,
        "description": "Not a list of STIX marking definitions with ids (none is added)",
    }
}
