"""Helpers for the Orion emulator tests: a recording notification receiver and request builders."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response

from tests.support import eventually

LINK_REL = 'rel="http://www.w3.org/ns/json-ld#context"'


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A notification endpoint: records every request; ``/status/<n>`` answers ``n``."""

    url: str
    received: list[Received] = field(default_factory=list)
    delay: float = 0.0

    async def wait(self, count: int, timeout: float = 5.0) -> list[Received]:
        await eventually(
            lambda: len(self.received) >= count, timeout=timeout, what=f"{count} notifications"
        )
        return self.received[:count]


def receiver_app(receiver: Receiver) -> FastAPI:
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH"])
    async def record(request: Request, path: str) -> Response:
        if receiver.delay:
            await asyncio.sleep(receiver.delay)
        receiver.received.append(
            Received(
                request.method,
                "/" + path,
                dict(request.query_params),
                dict(request.headers),
                await request.body(),
            )
        )
        status = int(path.split("/")[1]) if path.startswith("status/") else 204
        return Response(status_code=status)

    return app


def v2_sub(url: str, **notification: Any) -> dict[str, Any]:
    return {
        "description": "test",
        "subject": {"entities": [{"idPattern": ".*", "type": "Room"}]},
        "notification": {"http": {"url": url}, **notification},
    }


def room(n: int, temperature: float, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"Room{n}",
        "type": "Room",
        "temperature": {"type": "Number", "value": temperature},
        **extra,
    }


async def ok(response: httpx.Response, status: int) -> httpx.Response:
    assert response.status_code == status, response.text
    return response


async def subscribe(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> str:
    response = await ok(await client.post("/v2/subscriptions", json=body, headers=headers), 201)
    return response.headers["location"].rsplit("/", 1)[-1]


LD_JSON = {"Content-Type": "application/json"}


CONTEXT = "https://fiware.github.io/tutorials.Step-by-Step/tutorials-context.jsonld"


def ld_sub(uri: str, fmt: str, accept: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "urn:sub:1",
        "type": "Subscription",
        "entities": [{"type": "Room"}],
        "notification": {
            "format": fmt,
            "endpoint": {
                "uri": uri,
                "accept": accept,
                "receiverInfo": [{"key": "X-Secret", "value": "s"}],
            },
            **extra,
        },
        "@context": CONTEXT,
    }
