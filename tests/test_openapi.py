"""The SSE routes' OpenAPI declarations against what the running services answer (Schemathesis
leaves these routes out: a valid request opens an endless stream). Real subprocesses: a beat
(HiveMQ, no broker needed for this), the gateway with tokens in front of it, and the OpenCTI
emulator, whose ``/stream`` is SSE too.

* each SSE route, opened with a valid request, answers 200 with the content type its document
  declares (``text/event-stream``); the stream is closed at once;
* every SSE route of every document is opened here (a new one must be added);
* their errors (bad ``Last-Event-ID``, unknown channel or beat, bad filter, no token, a stopped
  stream) answer a status the document declares, with a body and headers that match it: checked
  by Schemathesis's response checks on each of those requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from schemathesis.checks import not_a_server_error

from tests.openapi_support import CHECKS, beat_gateway_and_emulator, document, load_schema

pytestmark = pytest.mark.slow

ADMIN = "openapi-admin-token"
BEARER = {"Authorization": f"Bearer {ADMIN}"}
OPENCTI = {"Authorization": "Bearer emulator-token"}


@dataclass
class Services:
    beat: str
    gateway: str
    opencti: str


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    workdir: Path = tmp_path_factory.mktemp("openapi")
    with beat_gateway_and_emulator(workdir, token=ADMIN, emulator="opencti") as (
        beat,
        gateway,
        opencti,
    ):
        yield Services(beat.base, gateway.base, opencti.base)


def sse_operations(base: str, headers: dict[str, str] | None = None) -> set[str]:
    """The operations whose 200 the document declares as ``text/event-stream``."""
    found = set()
    for path, operations in document(base, headers)["paths"].items():
        for method, operation in operations.items():
            content = operation["responses"].get("200", {}).get("content", {})
            if "text/event-stream" in content:
                found.add(f"{method.upper()} {path}")
    return found


def declared_type(base: str, path: str, headers: dict[str, str] | None) -> set[str]:
    operation = document(base, headers)["paths"][path]["get"]
    return set(operation["responses"]["200"]["content"])


OPENS = [
    ("beat", "/events", "/events", None),
    ("beat", "/events/{channel}", "/events/messages", None),
    ("gateway", "/streams", "/streams", BEARER),
    ("gateway", "/streams/{beat}", "/streams/hivemq", BEARER),
    ("gateway", "/streams/{beat}/{channel}", "/streams/hivemq/messages", BEARER),
    ("opencti", "/stream", "/stream", OPENCTI),
    ("opencti", "/stream/{stream_id}", "/stream/live", OPENCTI),
]


def test_every_sse_route_answers_the_content_type_it_declares(services: Services) -> None:
    opened: dict[str, set[str]] = {"beat": set(), "gateway": set(), "opencti": set()}
    for service, template, path, headers in OPENS:
        base = getattr(services, service)
        with httpx.stream("GET", base + path, headers=headers, timeout=10) as response:
            assert response.status_code == 200, (path, response.read())
            media_type = response.headers["content-type"].split(";")[0].strip()
        assert media_type in declared_type(base, template, headers), path
        opened[service].add(f"GET {template}")
    assert opened["beat"] == sse_operations(services.beat)
    assert opened["gateway"] == sse_operations(services.gateway, BEARER)
    assert opened["opencti"] == sse_operations(services.opencti)


ERRORS: list[tuple[str, str, dict[str, Any], int]] = [
    ("beat", "/events", {"headers": {"Last-Event-ID": "x"}}, 400),
    ("beat", "/events", {"query": {"last_event_id": "-1"}}, 400),
    ("beat", "/events/{channel}", {"path_parameters": {"channel": "nope"}}, 404),
    (
        "beat",
        "/events/{channel}",
        {"path_parameters": {"channel": "messages"}, "headers": {"Last-Event-ID": "1.5"}},
        400,
    ),
    ("gateway", "/streams", {"headers": {**BEARER, "Last-Event-ID": "hivemq=x"}}, 400),
    ("gateway", "/streams", {"headers": BEARER, "query": {"exact.Type": "x"}}, 400),
    ("gateway", "/streams", {"headers": BEARER, "query": {"filter": "[{"}}, 400),
    ("gateway", "/streams", {"headers": {"Authorization": "Bearer wrong"}}, 401),
    ("gateway", "/streams/{beat}", {"headers": BEARER, "path_parameters": {"beat": "no"}}, 404),
    (
        "gateway",
        "/streams/{beat}/{channel}",
        {"headers": BEARER, "path_parameters": {"beat": "hivemq", "channel": "no"}},
        404,
    ),
    (
        "gateway",
        "/streams/{beat}",
        {"headers": {**BEARER, "Last-Event-ID": "x"}, "path_parameters": {"beat": "hivemq"}},
        400,
    ),
    ("opencti", "/stream", {}, 401),
    ("opencti", "/stream/{stream_id}", {"path_parameters": {"stream_id": "unknown"}}, 401),
    (
        "opencti",
        "/stream/{stream_id}",
        {"headers": OPENCTI, "path_parameters": {"stream_id": "live"}, "query": {"recover": "0"}},
        500,
    ),
]


@pytest.mark.parametrize(("service", "path", "request_parts", "status"), ERRORS)
def test_sse_errors_are_the_declared_ones(
    services: Services, service: str, path: str, request_parts: dict[str, Any], status: int
) -> None:
    base = getattr(services, service)
    schema = load_schema(base, BEARER if service == "gateway" else None)
    case = schema[path]["GET"].Case(**request_parts)
    # OpenCTI answers a recovery without a start with a 500, which the emulator reproduces
    checks = [c for c in CHECKS if c is not not_a_server_error] if status == 500 else CHECKS
    response = case.call_and_validate(checks=checks, timeout=10)
    assert response.status_code == status
