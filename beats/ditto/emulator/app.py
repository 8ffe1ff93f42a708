"""The emulator's HTTP and WebSocket surface (FastAPI), and how to run it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from beats.ditto.emulator.apidoc import API, BURST, CREDENTIALS, MESSAGE, WRITE
from beats.ditto.emulator.core import DittoEmulator, Outgoing, parse_timeout
from beats.ditto.emulator.scenario import drive
from beats.ditto.emulator.sessions import Session
from beats.ditto.emulator.things import DittoError, public, select
from beats.ditto.protocol import MERGE_PATCH
from beats.ditto.rql import RqlError, parse
from common.http import serve_emulator
from common.openapi import install as install_openapi

__all__ = ["create_app", "serve"]

_MESSAGE = re.compile(
    r"(?:features/(?P<feature>[^/]+)/)?(?P<direction>inbox|outbox)/messages/(?P<subject>.+)"
)
_SEARCH_PAGE, _SEARCH_MAX = 25, 200
_Call = Callable[[Request], Awaitable[Response]]


def create_app(
    *,
    username: str = "ditto",
    password: str = "ditto",
    token: str | None = None,
    session_buffer: int = 10_000,
    scenario: bool = False,
    scenario_interval: float = 1.0,
) -> FastAPI:
    """The Ditto emulator as an ASGI app; ``app.state.ditto`` is its :class:`DittoEmulator`."""
    ditto = DittoEmulator(
        username=username, password=password, token=token, session_buffer=session_buffer
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cars = asyncio.create_task(drive(ditto, interval=scenario_interval)) if scenario else None
        yield
        if cars is not None:
            cars.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cars
        await ditto.hub.drop_connections(code=1001)

    app = FastAPIOffline(title="Eclipse Ditto emulator", lifespan=lifespan)
    install_openapi(app)  # a malformed parameter: 400, as documented
    app.state.ditto = ditto
    _auth(app, ditto)
    _websocket(app, ditto)
    _things(app, ditto)
    _reads(app, ditto)
    _messages(app, ditto)
    _admin(app, ditto)
    return app


_API: dict[str, Any] = {"responses": API, "dependencies": CREDENTIALS}


def _auth(app: FastAPI, ditto: DittoEmulator) -> None:
    @app.middleware("http")
    async def authenticate(request: Request, call_next: _Call) -> Response:
        if not request.url.path.startswith("/api/"):
            return await call_next(request)
        subject = ditto.authenticate(request.headers, request.query_params)
        if subject is None:
            body = {
                "status": 401,
                "error": "gateway:authentication.failed",
                "message": "Missing or invalid credentials.",
            }
            return JSONResponse(body, 401, headers={"WWW-Authenticate": 'Basic realm="ditto"'})
        request.state.subject = subject
        return await call_next(request)

    @app.exception_handler(DittoError)
    async def ditto_error(request: Request, exc: DittoError) -> Response:
        return JSONResponse(exc.json(), exc.status)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}


def _websocket(app: FastAPI, ditto: DittoEmulator) -> None:
    @app.websocket("/ws/2")
    async def ws(websocket: WebSocket) -> None:
        subject = ditto.authenticate(websocket.headers, websocket.query_params)
        if subject is None:
            await websocket.send_denial_response(Response(status_code=401))
            return
        await websocket.accept()
        session = Session(websocket, ditto.session_buffer, subject)
        ditto.sessions.add(session)
        sender = asyncio.create_task(session.send_loop(), name="ditto-emulator-send")
        try:
            while True:
                reply = ditto.client_text(session, await websocket.receive_text())
                if reply is not None:
                    session.offer(reply)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            ditto.sessions.discard(session)
            sender.cancel()


def _headers(request: Request) -> dict[str, Any]:
    given = {"ditto-originator": getattr(request.state, "subject", None)}
    given["correlation-id"] = request.headers.get("correlation-id")
    return given


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError as exc:
        raise DittoError(400, "json.invalid", f"Failed to parse JSON: {exc}") from None


def _things(app: FastAPI, ditto: DittoEmulator) -> None:
    @app.put("/api/2/things/{thing_id}", responses=WRITE, dependencies=CREDENTIALS)
    @app.put("/api/2/things/{thing_id}/{resource:path}", responses=WRITE, dependencies=CREDENTIALS)
    async def put(thing_id: str, request: Request, resource: str = "") -> Response:
        change = ditto.apply(
            ditto.store.put(thing_id, "/" + resource, await _json(request), **_headers(request))
        )
        if change.action == "modified":
            return Response(status_code=204)
        location = f"/api/2/things/{thing_id}" + (f"/{resource}" if resource else "")
        return JSONResponse(change.value, 201, headers={"Location": location})

    @app.patch("/api/2/things/{thing_id}", status_code=204, **_API)
    @app.patch("/api/2/things/{thing_id}/{resource:path}", status_code=204, **_API)
    async def patch(thing_id: str, request: Request, resource: str = "") -> Response:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith(MERGE_PATCH):
            raise DittoError(415, "mediatype.unsupported", f"Use content-type {MERGE_PATCH}.")
        patch = await _json(request)
        ditto.apply(ditto.store.merge(thing_id, "/" + resource, patch, **_headers(request)))
        return Response(status_code=204)

    @app.delete("/api/2/things/{thing_id}", status_code=204, **_API)
    @app.delete("/api/2/things/{thing_id}/{resource:path}", status_code=204, **_API)
    async def delete(thing_id: str, request: Request, resource: str = "") -> Response:
        ditto.apply(ditto.store.delete(thing_id, "/" + resource, **_headers(request)))
        return Response(status_code=204)


def _project(thing: dict[str, Any], fields: str | None) -> dict[str, Any]:
    """Ditto's ``fields`` selection; ``_revision``, ``_modified``, ``_created`` only on request."""
    return select(thing, fields) if fields else public(thing)


def _reads(app: FastAPI, ditto: DittoEmulator) -> None:
    @app.get("/api/2/things/{thing_id}", **_API)
    @app.get("/api/2/things/{thing_id}/{resource:path}", **_API)
    async def get(thing_id: str, resource: str = "", fields: str | None = None) -> Any:
        if resource:
            return ditto.store.get(thing_id, "/" + resource)
        ditto.store.get(thing_id)
        return _project(ditto.things[thing_id], fields)

    @app.get("/api/2/things", **_API)
    async def get_many(ids: str = "", fields: str | None = None) -> list[dict[str, Any]]:
        """Only the things that exist (and are visible), in the order asked for."""
        found = [i for i in dict.fromkeys(ids.split(",")) if i in ditto.things]
        return [_project(ditto.things[i], fields) for i in found]

    @app.get("/api/2/search/things", **_API)
    async def search(
        namespaces: str | None = None,
        filter: str | None = None,
        fields: str | None = None,
        option: str | None = None,
    ) -> dict[str, Any]:
        """Things sorted by id, ``size(n)`` (default 25, at most 200) and ``cursor(c)`` paging."""
        spaces = set(namespaces.split(",")) if namespaces else None
        try:
            predicate = parse(filter) if filter else None
        except RqlError as exc:
            raise DittoError(400, "rql.expression.invalid", str(exc)) from None
        size, cursor = _paging(option)
        matches = [
            t
            for i, t in sorted(ditto.things.items())
            if (spaces is None or i.split(":", 1)[0] in spaces)
            and (predicate is None or predicate(public(t)))
        ]
        page = matches[cursor : cursor + size]
        result: dict[str, Any] = {"items": [_project(t, fields) for t in page]}
        if cursor + size < len(matches):
            result["cursor"] = base64.urlsafe_b64encode(str(cursor + size).encode()).decode()
        return result


def _paging(option: str | None) -> tuple[int, int]:
    size, cursor = _SEARCH_PAGE, 0
    for name, argument in re.findall(r"(size|cursor)\(([^)]*)\)", option or ""):
        try:
            if name == "size":
                size = int(argument)
            else:
                cursor = int(base64.urlsafe_b64decode(argument.encode()).decode())
        except ValueError:
            raise DittoError(400, "thing-search:search.option.invalid", f"Bad {name}().") from None
    if not 1 <= size <= _SEARCH_MAX or cursor < 0:
        raise DittoError(400, "thing-search:search.option.invalid", "size() is 1..200.")
    return size, cursor


def _payload(body: bytes, content_type: str) -> Any:
    """A message body as the Ditto protocol carries it: JSON, text, or base64 for binary."""
    if "json" in content_type and body:
        try:
            return json.loads(body)
        except ValueError:
            raise DittoError(400, "messages:messageformat.invalid", "Body is not JSON.") from None
    if content_type.startswith("text/") or not body:
        return body.decode("utf-8", "replace")
    return base64.b64encode(body).decode()


def _messages(app: FastAPI, ditto: DittoEmulator) -> None:
    @app.post(
        "/api/2/things/{thing_id}/{resource:path}", responses=MESSAGE, dependencies=CREDENTIALS
    )
    async def post_message(thing_id: str, resource: str, request: Request) -> Response:
        match = _MESSAGE.fullmatch(resource)
        if match is None:
            raise DittoError(404, "things:resource.notfound", f"No resource '/{resource}'.")
        content_type = request.headers.get("content-type", "application/octet-stream")
        outgoing = Outgoing(
            thing_id=thing_id,
            direction=match["direction"],
            subject=match["subject"],
            payload=_payload(await request.body(), content_type),
            content_type=content_type,
            feature_id=match["feature"],
            correlation_id=request.headers.get("correlation-id"),
        )
        timeout = parse_timeout(request.query_params.get("timeout"))
        reply = await ditto.send_message(outgoing, timeout)
        if reply is None:
            return Response(status_code=202)
        return _reply(reply)


def _reply(frame: dict[str, Any]) -> Response:
    """The HTTP answer carrying a live message response from a WebSocket client."""
    headers = frame.get("headers")
    content_type = "application/json"
    if isinstance(headers, dict):
        content_type = str(headers.get("content-type", content_type))
    value, status = frame.get("value"), int(frame.get("status", 200))
    if value is None or status == 204:
        return Response(status_code=status)
    if isinstance(value, str) and "json" not in content_type:
        return Response(value, status, media_type=content_type)
    return Response(json.dumps(value), status, media_type=content_type)


def _admin(app: FastAPI, ditto: DittoEmulator) -> None:
    """Test switches; not part of Ditto (and not behind its auth)."""

    @app.post("/admin/drop")
    async def drop() -> dict[str, int]:
        return {"dropped": await ditto.hub.drop_connections()}

    @app.post("/admin/raw")
    async def raw(request: Request) -> dict[str, int]:
        """The body as a text frame; as a binary frame when sent as application/octet-stream."""
        body = await request.body()
        binary = request.headers.get("content-type") == "application/octet-stream"
        frame = body if binary else body.decode()
        return {"sessions": sum(s.offer(frame) for s in list(ditto.sessions))}

    @app.post("/admin/burst", responses=BURST)
    async def burst(thing_id: str, count: int) -> dict[str, int]:
        return {"events": await ditto.burst(thing_id, count), "dropped": ditto.dropped}

    @app.get("/admin/sessions")
    async def sessions() -> list[dict[str, Any]]:
        return [
            {
                "subject": s.subject,
                "streams": sorted(s.subscriptions),
                "sent": s.sent,
                "queued": s.queue.qsize(),
                "dropped": s.dropped,
            }
            for s in ditto.sessions
        ]


async def serve(
    *, host: str = "127.0.0.1", port: int = 8090, sock: socket.socket | None = None, **options: Any
) -> None:
    """Run the emulator (options as for :func:`create_app`) until cancelled. ``sock``: already
    bound (else ``host:port`` is bound first)."""
    await serve_emulator(create_app(**options), name="ditto", host=host, port=port, sock=sock)
