"""Schema-driven fuzzing of every HTTP endpoint from the services' own OpenAPI documents
(Schemathesis), against the real services as subprocesses: the FIWARE beat (``/notify``,
``/writeback`` and the kernel's routes every beat serves) and the gateway in front of it.

Proven: no input the schema allows or breaks gets a 5xx (``not_a_server_error``); the services
stay healthy. SSE endpoints (``/events``, ``/streams``) are left out here, since a valid request
opens an endless stream; their bad inputs (Last-Event-ID, filters) are tested in
``tests/test_sse.py`` and ``tests/gateway/test_filters.py``. Cases per operation:
``BEATS_FUZZ_EXAMPLES`` (``make fuzz``: 10,000).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.processes import ServiceProcess
from tests.support import free_port, fuzz_examples

pytestmark = [pytest.mark.fuzz, pytest.mark.slow]

SECRET = "fuzz-secret"
_SSE = r"^/(events|streams)"


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServiceProcess]]:
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    orion = ServiceProcess(["emulate", "orion"], port=free_port(), log=workdir / "orion.log")
    port = free_port()
    fiware = ServiceProcess(
        ["run", "fiware", "--orion-url", orion.base, "--notify-secret", SECRET, "--writeback-open",
         "--notify-url", f"http://127.0.0.1:{port}/notify", "--data-dir", str(workdir / "fiware"),
         "--max-body-bytes", "65536", "--log-level", "error"],
        port=port, log=workdir / "fiware.log",
    )  # fmt: skip
    gateway = ServiceProcess(
        ["run", "gateway", "--beat", f"fiware={fiware.base}", "--log-level", "error"],
        port=free_port(), log=workdir / "gateway.log",
    )  # fmt: skip
    started: list[ServiceProcess] = []
    try:
        for process, ready in ((orion, False), (fiware, True), (gateway, True)):
            process.start(ready=ready)
            started.append(process)
        yield {"fiware": fiware, "gateway": gateway}
    finally:
        for process in reversed(started):
            process.stop()


def _schema(service: ServiceProcess) -> Any:
    schema = schemathesis.openapi.from_url(f"{service.base}/openapi.json")
    return schema.exclude(path_regex=_SSE)


FUZZ = settings(
    max_examples=fuzz_examples(100),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def fuzz(service: ServiceProcess, headers: dict[str, dict[str, str]]) -> list[str]:
    """Every operation of the service's schema (SSE excluded), ``FUZZ`` cases each; returns
    the operations fuzzed. (Schemathesis's own pytest plugin does not support pytest 9 yet,
    so the operations' strategies run under Hypothesis directly.)"""
    done = []
    for result in _schema(service).get_all_operations():
        operation = result.ok()

        @FUZZ
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            extra = headers.get(case.path, {})
            case.call_and_validate(headers=extra, checks=[not_a_server_error], timeout=10)

        check()
        done.append(operation.label)
    return done


def test_fiware_beat_never_answers_5xx(services: dict[str, ServiceProcess]) -> None:
    done = fuzz(services["fiware"], {"/notify": {"X-Beats-Secret": SECRET}})
    assert {"POST /notify", "POST /writeback", "GET /readyz"} <= set(done)


def test_gateway_never_answers_5xx(services: dict[str, ServiceProcess]) -> None:
    done = fuzz(services["gateway"], {})
    assert {"GET /beats", "GET /readyz"} <= set(done)


def test_services_are_still_healthy_after_the_fuzzing(services: dict[str, ServiceProcess]) -> None:
    for process in services.values():
        assert process.process is not None and process.process.poll() is None
        assert httpx.get(f"{process.base}/healthz", timeout=5).status_code == 200
