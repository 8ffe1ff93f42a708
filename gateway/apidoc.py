"""What the gateway's OpenAPI document declares beyond what FastAPI infers: its security
schemes (the token as a bearer header, an ``access_token`` query parameter or cookie), the
filter query parameters of :mod:`gateway.filters`, the bodies of its answers and its errors.
Used by :mod:`gateway.routes`; the shared pieces are :mod:`common.openapi`'s."""

from __future__ import annotations

from typing import Any

from fastapi import Security
from fastapi.params import Depends
from fastapi.security import APIKeyCookie, APIKeyQuery, HTTPBearer
from pydantic import BaseModel

from common.openapi import Detail, OAuthError, error
from gateway.auth import COOKIE
from gateway.filters import ATTRIBUTE, MAX_CONDITIONS, MAX_FILTER_CHARS

__all__ = [
    "AUTH_ERRORS",
    "FILTER_PARAMETERS",
    "GatewayReadiness",
    "security",
    "stream_errors",
]

_TOKEN = "A token of --tokens (unless the gateway runs without tokens: open)."


def security(*, required: bool) -> list[Depends]:
    """The security dependencies of a route that needs a token (none when ``required`` is
    false): any one of the three ways to present it. They only declare the schemes; the
    gateway itself checks the token (:meth:`gateway.service.Gateway.principal`)."""
    if not required:
        return []
    return [
        Security(HTTPBearer(auto_error=False, description=_TOKEN)),
        Security(APIKeyQuery(name="access_token", auto_error=False, description=_TOKEN)),
        Security(APIKeyCookie(name=COOKIE, auto_error=False, description=_TOKEN)),
    ]


AUTH_ERRORS: dict[int | str, Any] = {
    400: error(
        "Different tokens presented (invalid_request), or a malformed parameter",
        OAuthError | Detail,  # type: ignore[arg-type]
    ),
    401: error("No token or an unknown one (RFC 6750)", OAuthError, headers=("WWW-Authenticate",)),
    403: error("The token's scopes do not cover this (insufficient_scope)", OAuthError),
}


def stream_errors(*, one_beat: bool) -> dict[int | str, Any]:
    """The errors of a ``/streams`` route (``one_beat``: it names a beat in its path)."""
    errors: dict[int | str, Any] = {
        **AUTH_ERRORS,
        400: error(
            "A bad Last-Event-ID or filter (detail), or different tokens presented "
            "(invalid_request)",
            OAuthError | Detail,  # type: ignore[arg-type]
        ),
        503: error(
            "Busy (too many streams: error busy), or the beat has not told its channels yet",
            OAuthError | Detail,  # type: ignore[arg-type]
            headers=("Retry-After",),
        ),
    }
    if one_beat:
        errors[404] = error("No such beat behind this gateway, or no such channel of it")
    return errors


_ATTR = ATTRIBUTE.pattern.strip("^$")
_FILTER_NAMES = (
    rf"^(any\.)?(not\.)?(exact|prefix|suffix)\.({_ATTR}|data\..+)$|^(any\.)?(not\.)?data\..+$"
)

FILTER_PARAMETERS: dict[str, Any] = {
    "parameters": [
        {
            "name": "conditions",
            "in": "query",
            "required": False,
            "description": "Filter conditions, one query parameter each, all of which must "
            "hold: exact.<attr>=v, prefix.<attr>=v, suffix.<attr>=v, not.<dialect>.<attr>=v, "
            "any.<dialect>.<attr>=v (the any. conditions form one group, at least one holds), "
            "data.<path>=v (a field of data equals v). <attr>: a CloudEvents attribute or "
            "extension (lower-case letters and digits) or data.<path>. Any other parameter is "
            f"a 400. At most {MAX_CONDITIONS} conditions and {MAX_FILTER_CHARS} characters.",
            "style": "form",
            "explode": True,
            "schema": {
                "type": "object",
                "propertyNames": {"pattern": _FILTER_NAMES},
                "additionalProperties": {"type": "string"},
            },
        },
        {
            "name": "filter",
            "in": "query",
            "required": False,
            "description": "A CloudEvents Subscriptions API filter array (or one filter "
            "object) as JSON, combined with the other conditions by all.",
            "schema": {"type": "string", "maxLength": MAX_FILTER_CHARS},
        },
    ]
}


class BeatState(BaseModel):
    ready: bool
    reachable: bool


class KafkaState(BaseModel):
    connected: bool
    error: str | None


class GatewayReadiness(BaseModel):
    """The body of the gateway's ``/readyz``, 200 or 503 alike (``kafka``: with beats read
    from Kafka)."""

    ready: bool
    beats: dict[str, BeatState]
    streams: int
    kafka: KafkaState | None = None
