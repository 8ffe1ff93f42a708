"""Shared by the OpenAPI tests: a service's document as Schemathesis reads it, and the
response checks every answer must pass (status code, content type, body schema, headers,
and no server error)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
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

from tests.processes import ServiceProcess
from tests.support import free_port

__all__ = ["CHECKS", "beat_gateway_and_emulator", "document", "load_schema"]

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


@contextlib.contextmanager
def beat_gateway_and_emulator(
    workdir: Path, *, token: str, emulator: str
) -> Iterator[tuple[ServiceProcess, ServiceProcess, ServiceProcess]]:
    """A HiveMQ beat (its broker absent), the gateway in front of it with ``token`` (every
    scope) and ``beats emulate <emulator>``, as subprocesses, started and stopped."""
    tokens = workdir / "tokens.yaml"
    digest = hashlib.sha256(token.encode()).hexdigest()
    tokens.write_text(f'tokens:\n  - name: reader\n    sha256: {digest}\n    scopes: ["*"]\n')
    beat = ServiceProcess(
        ["run", "hivemq", "--data-dir", str(workdir / "hivemq"), "--log-level", "error",
         "--mqtt-url", f"mqtt://127.0.0.1:{free_port()}"],
        port=free_port(), log=workdir / "hivemq.log",
    )  # fmt: skip
    gateway = ServiceProcess(
        ["run", "gateway", "--beat", f"hivemq={beat.base}", "--tokens-file", str(tokens),
         "--log-level", "error"],
        port=free_port(), log=workdir / "gateway.log",
    )  # fmt: skip
    upstream = ServiceProcess(
        ["emulate", emulator, "--log-level", "error"], port=free_port(), log=workdir / "up.log"
    )
    started: list[ServiceProcess] = []
    try:
        for process in (beat, gateway, upstream):
            process.start(ready=False)
            started.append(process)
        yield beat, gateway, upstream
    finally:
        for process in reversed(started):
            process.stop()
