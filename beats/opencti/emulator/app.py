"""The emulator's HTTP surface: OpenCTI's stream routes, and the admin routes of the emulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Iterable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field

from beats.opencti.emulator.apidoc import CONTROL, GRAPHQL, MARKINGS, STREAM
from beats.opencti.emulator.channel import Channel, StreamOptions
from beats.opencti.emulator.core import (
    DEFAULT_LIVE_STREAM,
    Collection,
    OpenctiEmulator,
    StreamStore,
)
from beats.opencti.emulator.graphql import run_query
from beats.opencti.frames import start_position
from beats.opencti.scenario import Scenario
from common.http import serve_emulator
from common.openapi import install as install_openapi

__all__ = ["create_app", "serve"]

_NOT_AUTHENTICATED = "You are not authenticated, please check your credentials"
_NOT_AUTHORIZED = "You are not authorized, please check your credentials"
_SSE_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "Connection": "keep-alive",
    "Access-Control-Allow-Origin": "*",
}


def create_app(
    *,
    token: str,
    heartbeat_interval: float = 5.0,
    drop_every: int | None = None,
    scenario_rate: float = 0.0,
    scenario_seed: int | None = None,
    live_streams: Iterable[str] = (),
    trimming: int = 0,
    graphql: bool = True,
) -> FastAPI:
    """The OpenCTI live-stream emulator as an ASGI app; ``app.state.opencti`` is its
    :class:`OpenctiEmulator` (append events, start/stop/delete live streams from Python).

    ``token`` is the one API token (a bypass user's); ``live_streams`` are collection ids that
    exist, started, from the beginning (besides the built-in ``live``); ``drop_every`` closes
    every connection after that many data frames; ``scenario_rate`` > 0 appends generated
    events (:class:`Scenario`, seeded with ``scenario_seed``) at that many per second;
    ``trimming`` bounds the stream (:class:`StreamStore`); ``graphql`` False leaves out
    ``POST /graphql`` (a platform whose API the beat cannot use)."""
    emulator = OpenctiEmulator(token=token, store=StreamStore(trimming=trimming))
    for stream_id in live_streams:
        emulator.collections.setdefault(stream_id, Collection(stream_id))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = None
        if scenario_rate > 0:
            generate = _generate(emulator, scenario_rate, scenario_seed)
            task = asyncio.create_task(generate, name="opencti-emulator:scenario")
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPIOffline(title="OpenCTI live-stream emulator", lifespan=lifespan)
    install_openapi(app)  # a malformed parameter: 400, as documented
    app.state.opencti = emulator
    options = {"heartbeat_interval": heartbeat_interval, "drop_every": drop_every}
    _streams(app, emulator, options)
    if graphql:
        _graphql(app, emulator)
    _admin(app, emulator)
    return app


def _graphql(app: FastAPI, emulator: OpenctiEmulator) -> None:
    @app.post("/graphql", responses=GRAPHQL)
    async def graphql_api(request: Request) -> Response:
        """OpenCTI's GraphQL API, its ``markingDefinitions`` query (see :mod:`.graphql`)."""
        try:
            body = await request.json()
        except ValueError:
            body = None
        authenticated = request.headers.get("authorization") == f"Bearer {emulator.token}"
        status, answer = await run_query(body, emulator.markings(), authenticated=authenticated)
        return JSONResponse(answer, status_code=status)


def _refused(status: int, message: str) -> Response:
    """OpenCTI ends the response with the reason in ``statusMessage`` (the HTTP reason phrase,
    which ASGI servers cannot set); the emulator puts it in a JSON body as well."""
    return JSONResponse({"status": status, "statusMessage": message}, status_code=status)


def _param(request: Request, *names: str) -> str | None:
    """The first of query parameter ``names[0]``, then each name as a header (OpenCTI)."""
    value = request.query_params.get(names[0])
    for name in names:
        value = value or request.headers.get(name)
    return value


def _options(request: Request, collection: str | None, base: dict[str, Any]) -> StreamOptions:
    start = _param(request, "from") or request.headers.get("last-event-id")
    delay = _param(request, "delay") or request.headers.get("event-delay") or "0"
    return StreamOptions(
        collection=collection,
        start=start_position(start),
        recover=start_position(_param(request, "recover", "recover-date")),
        listen_delete=_param(request, "listen-delete") != "false",
        with_inferences=_param(request, "with-inferences") == "true",
        delay=int(delay) / 1000 if delay.isdigit() else 0.0,
        **base,
    )


def _streams(app: FastAPI, emulator: OpenctiEmulator, base: dict[str, Any]) -> None:
    def authenticated(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {emulator.token}"

    def stream(options: StreamOptions) -> StreamingResponse:
        body = Channel(emulator, options).frames()
        return StreamingResponse(
            body, media_type="text/event-stream; charset=utf-8", headers=_SSE_HEADERS
        )

    @app.get("/stream", response_class=StreamingResponse, responses=STREAM)
    async def raw_stream(request: Request) -> Response:
        if not authenticated(request):
            return _refused(401, _NOT_AUTHENTICATED)
        return stream(_options(request, None, base))

    @app.get("/stream/{stream_id}", response_class=StreamingResponse, responses=STREAM)
    async def live_stream(request: Request, stream_id: str) -> Response:
        collection = emulator.collections.get(stream_id)
        if stream_id != DEFAULT_LIVE_STREAM and collection is None:
            return _refused(401, _NOT_AUTHORIZED)
        if collection is not None and not collection.started:
            return _refused(410, "This live stream is stopped")
        if not authenticated(request) and not (collection is not None and collection.public):
            return _refused(401, _NOT_AUTHENTICATED)
        options = _options(request, stream_id, base)
        if options.recover is not None and options.start is None:
            message = "Recovery mode is only possible with a start date."
            return _refused(500, f"Error in stream {stream_id}: {message}")
        return stream(options)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}


class AdminEvent(BaseModel):
    """One event to append: ``data`` (the event JSON) or ``raw`` (sent unparsed)."""

    kind: str | None = Field(None, description="SSE event name; default: the event's type.")
    data: dict[str, Any] | None = None
    raw: str | None = Field(
        None,
        description="Send this text (one line) as the frame's data, unparsed.",
        pattern=r"^[^\r\n]*$",
    )


def _admin(app: FastAPI, emulator: OpenctiEmulator) -> None:
    @app.post("/admin/events")
    async def add_events(events: list[AdminEvent], shared_id: bool = False) -> dict[str, Any]:
        """Append events; ``shared_id`` gives them one stream id (as dependency resolution)."""
        frames = [(e.kind or str((e.data or {}).get("type", "create")), _text(e)) for e in events]
        ids = await emulator.store.append(frames, shared_id=shared_id)
        return {"ids": [str(i) for i in ids]}

    @app.post("/admin/markings", responses=MARKINGS)
    async def add_markings(markings: list[dict[str, Any]]) -> Any:
        """Marking definitions the platform holds without sending them on the stream (400,
        none added, when one is not a STIX marking definition with an id)."""
        try:
            for marking in markings:
                emulator.check_marking(marking)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        for marking in markings:
            emulator.add_marking(marking)
        return {"markings": len(emulator.markings())}

    @app.post("/admin/streams/{stream_id}")
    async def create_stream(stream_id: str, public: bool = False) -> dict[str, Any]:
        collection = await emulator.create_stream(stream_id, public=public)
        return {"stream": stream_id, "started": collection.started, "public": collection.public}

    @app.post("/admin/streams/{stream_id}/{action}", responses=CONTROL)
    async def control(stream_id: str, action: str) -> Response:
        if action not in ("start", "stop"):
            return JSONResponse({"error": "action is start or stop"}, status_code=404)
        collection = await emulator.set_started(stream_id, action == "start")
        return JSONResponse({"stream": stream_id, "stopped": not collection.started})

    @app.delete("/admin/streams/{stream_id}")
    async def delete_stream(stream_id: str) -> dict[str, Any]:
        await emulator.delete_stream(stream_id)
        return {"stream": stream_id, "deleted": True}


def _text(event: AdminEvent) -> str:
    if event.raw is not None:
        return event.raw
    return json.dumps(event.data, separators=(",", ":"))


async def _generate(emulator: OpenctiEmulator, rate: float, seed: int | None) -> None:
    scenario = Scenario(seed=seed)
    while True:
        await emulator.append(scenario.next())
        await asyncio.sleep(1.0 / rate)


async def serve(
    *, host: str = "127.0.0.1", port: int = 4000, sock: socket.socket | None = None, **options: Any
) -> None:
    """Run the emulator (``create_app(**options)``) under uvicorn until cancelled. ``sock``:
    already bound (else ``host:port`` is bound first)."""
    await serve_emulator(create_app(**options), name="opencti", host=host, port=port, sock=sock)
