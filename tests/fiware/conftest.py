"""Fixtures of the FIWARE tests: the Orion emulator and a notification receiver, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from beats.fiware.emulator import Broker, create_app
from tests.fiware.orion import Receiver, receiver_app
from tests.support import serve_app


@pytest.fixture
async def orion() -> AsyncIterator[tuple[httpx.AsyncClient, Broker]]:
    app = create_app()
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as client:
        yield client, app.state.broker


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    sink = Receiver("")
    async with serve_app(receiver_app(sink)) as url:
        sink.url = url
        yield sink
