"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) render every operation in headless Chromium with
no network beyond this machine (:func:`tests.browser.chromium` ``offline``): their files come
from the fastapi-offline package, served by each service, not from a CDN. A beat, the gateway
(its pages behind a token, given as the ``access_token`` cookie as a browser would) and an
emulator, as subprocesses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import chromium, needs_chromium
from tests.openapi_support import beat_gateway_and_emulator, document

pytestmark = [needs_chromium, pytest.mark.slow]

TOKEN = "docs-token"
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    workdir: Path = tmp_path_factory.mktemp("docs")
    with beat_gateway_and_emulator(workdir, token=TOKEN, emulator="orion") as (
        beat,
        gateway,
        orion,
    ):
        yield {"beat": beat.base, "gateway": gateway.base, "orion": orion.base}


def operations(base: str, headers: dict[str, str] | None) -> int:
    return sum(len(methods) for methods in document(base, headers)["paths"].values())


def _count(driver: Any, selector: str) -> int:
    """How many distinct operations the elements matching ``selector`` show (ReDoc renders
    some twice)."""
    count: int = driver.execute_script(
        "const shown = [...document.querySelectorAll(arguments[0])];"
        "return new Set(shown.map((e) => e.getAttribute('data-section-id') || e.id)).size",
        selector,
    )
    return count


def _resources(driver: Any) -> list[str]:
    names: list[str] = driver.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"
    )
    return names


PAGES = {
    "/docs": ".opblock",  # one per operation (Swagger UI)
    "/redoc": "[data-section-id^='operation/']",  # one per operation (ReDoc)
}


def render(base: str, page: str, *, token: str | None) -> tuple[int, list[str]]:
    """Open ``page`` offline; the operations it shows once rendered, and what it loaded."""
    with chromium(offline=True) as driver:
        if token is not None:
            driver.get(f"{base}/healthz")  # a page of the origin, to set its cookie
            driver.add_cookie({"name": "access_token", "value": token, "path": "/"})
        driver.get(base + page)
        WebDriverWait(driver, 20, poll_frequency=0.2).until(lambda d: _count(d, PAGES[page]) > 0)
        return _count(driver, PAGES[page]), [driver.current_url, *_resources(driver)]


@pytest.mark.parametrize("page", sorted(PAGES))
@pytest.mark.parametrize("service", ["beat", "gateway", "orion"])
def test_api_docs_render_every_operation_offline(
    services: dict[str, str], service: str, page: str
) -> None:
    base = services[service]
    token = TOKEN if service == "gateway" else None
    expected = operations(base, {"Authorization": f"Bearer {token}"} if token else None)
    shown, loaded = render(base, page, token=token)
    assert shown == expected
    # ReDoc's footer shows its maker's logo from its CDN (hard-coded, no option): an image
    # that fails offline without changing the page; everything else is the service's own
    elsewhere = [url for url in loaded if not url.startswith(base + "/")]
    assert loaded and elsewhere in ([], [REDOC_LOGO] if page == "/redoc" else []), loaded
