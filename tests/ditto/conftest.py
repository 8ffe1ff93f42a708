"""Fixtures for the Ditto tests: the emulator on a real port, and WebSocket/HTTP helpers."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from beats.ditto.emulator import DittoEmulator, create_app
from tests.support import serve_app

AUTH = ("ditto", "ditto")
TOKEN = "jwt-1"
BASIC = {"Authorization": "Basic " + base64.b64encode(b"ditto:ditto").decode()}


@dataclass
class Ditto:
    url: str
    emulator: DittoEmulator

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws/2"

    def connect(self, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        """``async with ditto.connect() as ws``: a WebSocket session (basic auth by default)."""
        return websockets.connect(self.ws_url, additional_headers=headers or BASIC, **kwargs)

    async def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An authenticated HTTP request; the response whatever its status."""
        async with httpx.AsyncClient(base_url=self.url, auth=AUTH, timeout=30) as client:
            return await client.request(method, path, **kwargs)


@pytest.fixture
async def ditto_server() -> AsyncIterator[Ditto]:
    app = create_app(token=TOKEN)
    async with serve_app(app) as url:
        yield Ditto(url, app.state.ditto)


async def recv(ws: ClientConnection, timeout: float = 5.0) -> str:
    async with asyncio.timeout(timeout):
        frame = await ws.recv()
    return frame if isinstance(frame, str) else frame.decode()


async def recv_json(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await recv(ws, timeout))
    return frame


async def subscribe(ws: ClientConnection, command: str) -> None:
    """Send a START-SEND-* command and insist on its exact ACK as the next frame."""
    await ws.send(command)
    assert await recv(ws) == command.partition("?")[0] + ":ACK"
