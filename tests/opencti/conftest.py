"""Fixtures and readers for the OpenCTI tests: the emulator on a real port, its SSE read with
``httpx-sse`` into :class:`~beats.opencti.frames.Frame` objects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest
from httpx_sse import aconnect_sse

from beats.opencti.emulator import OpenctiEmulator, create_app
from beats.opencti.frames import Frame
from tests.support import serve_app

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Emulator:
    """A running emulator: its base URL and its Python API."""

    url: str
    api: OpenctiEmulator


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    app = create_app(token=TOKEN, heartbeat_interval=0.2)
    async with serve_app(app) as url:
        yield Emulator(url, app.state.opencti)


async def read_frames(
    url: str,
    *,
    until: Callable[[list[Frame]], bool] | int,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> list[Frame]:
    """Frames of one connection, until ``until`` (a count, or a test on the frames so far)
    holds or the server ends the stream. Raises on a non-200 answer."""
    done = (lambda frames: len(frames) >= until) if isinstance(until, int) else until
    frames: list[Frame] = []
    async with (
        asyncio.timeout(timeout),
        httpx.AsyncClient(timeout=timeout) as client,
        aconnect_sse(
            client, "GET", url, headers={**AUTH, **(headers or {})}, params=params
        ) as source,
    ):
        source.response.raise_for_status()
        async for sse in source.aiter_sse():
            frames.append(Frame.from_sse(sse))
            if done(frames):
                break
    return frames


def data_frames(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if f.kind in ("create", "update", "delete", "merge")]
