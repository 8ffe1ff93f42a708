"""The bodies and statuses of the Orion emulator's answers, for its OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from common.openapi import Detail, errors

__all__ = ["LD_ERRORS", "V2_ERRORS", "created", "no_content"]


class OrionErrorBody(BaseModel):
    """An NGSI v2 error (:class:`~.model.OrionError`)."""

    error: str
    description: str


class LdProblem(BaseModel):
    """An NGSI-LD error: problem details (:class:`~.model.LdError`)."""

    type: str
    title: str
    detail: str | None = None


_NO_ROUTE = "a path no route matches (the framework's 404)"
V2_ERRORS = {
    **errors(OrionErrorBody, 400, 409, 415, 422),
    **errors(OrionErrorBody | Detail, 404, why=_NO_ROUTE),
}
LD_ERRORS = {**errors(LdProblem, 400, 409, 415), **errors(LdProblem | Detail, 404, why=_NO_ROUTE)}


def no_content(description: str = "Done") -> dict[int | str, Any]:
    return {204: {"description": description}}


def created(description: str = "Created") -> dict[int | str, Any]:
    return {
        201: {"description": description, "headers": {"Location": {"schema": {"type": "string"}}}}
    }
