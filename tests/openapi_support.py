"""Shared by the OpenAPI tests: a service's document as Schemathesis reads it, and the
response checks every answer must pass (status code, content type, body schema, headers,
and no server error)."""

from __future__ import annotations

from typing import Any

import httpx
import schemathesis
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import NotAServerErrorConfig

__all__ = ["CHECKS", "document", "load_schema"]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def document(base: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """``base``'s ``/openapi.json`` (the gateway's needs a token)."""
    response = httpx.get(f"{base}/openapi.json", headers=headers, timeout=10)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def load_schema(base: str, headers: dict[str, str] | None = None) -> Any:
    """The service's document for Schemathesis, its requests sent to ``base``. A 503 is not a
    server error here: the services answer it on purpose (not ready, log unavailable, busy)
    and declare it where they do, so ``status_code_conformance`` still fails an undeclared
    one; any other 5xx fails ``not_a_server_error``."""
    schema = schemathesis.openapi.from_dict(document(base, headers))
    schema.config.update(base_url=base)
    schema.config.checks.not_a_server_error = NotAServerErrorConfig(
        expected_statuses=["2xx", "3xx", "4xx", "503"]
    )
    return schema
