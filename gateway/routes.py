"""The gateway's HTTP surface: streams, beat status, health, metrics and the dashboard page."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse
from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask

from common.openapi import PROMETHEUS_TEXT, prometheus_ok, sse_ok
from common.routes import SSE_HEADERS
from common.sse import parse_last_event_id
from common.sse_response import SseResponse
from gateway.apidoc import (
    AUTH_ERRORS,
    FILTER_PARAMETERS,
    GatewayReadiness,
    security,
    stream_errors,
)
from gateway.auth import AuthError, Principal
from gateway.filters import FilterError, parse_query
from gateway.upstream import StreamKey, stream_label

if TYPE_CHECKING:
    from gateway.service import Gateway

__all__ = ["DOCS_ASSETS", "gateway_router", "install_error_handlers"]

DOCS_ASSETS = "/static-offline-docs"
"""Where the gateway serves Swagger UI's and ReDoc's files (from the fastapi-offline package)."""
_DASHBOARD = Path(__file__).parent / "static" / "dashboard.html"
_POSITION_WAIT = 2.0
"""Seconds a live client's answer waits for its streams' positions
(:meth:`gateway.clients.ClientStream.positioned`)."""
_FILTERS = (
    "Filters (query parameters, all must hold): exact.<attr>=v, prefix.<attr>=v, "
    "suffix.<attr>=v, not.<dialect>.<attr>=v, any.<dialect>.<attr>=v (one group, at least one "
    "holds), data.<path>=v (a data field equals v), filter=<CloudEvents Subscriptions API "
    "filter array as JSON>. <attr> is a CloudEvents attribute or extension, or data.<path>."
)

_BUSY = {
    "max_streams": "too many streams, retry later",
    "token_streams": "this token holds too many streams (--max-streams-per-token)",
    "upstreams": "too many upstream streams are open (--max-upstreams), retry later",
    "kafka": "the gateway has not read the topics from Kafka yet, retry later",
}

LastId = Annotated[str | None, Header(alias="Last-Event-ID")]
LastIdQuery = Annotated[
    str | None,
    Query(description="Resume after this position (0: everything the beats keep)."),
]


def install_error_handlers(app: FastAPI, gateway: Gateway) -> None:
    async def auth_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AuthError)
        gateway.metrics.auth_failures.labels(exc.reason).inc()
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())

    app.add_exception_handler(AuthError, auth_error)


def gateway_router(gateway: Gateway) -> APIRouter:
    router = APIRouter()
    _health_routes(router, gateway)
    _stream_routes(router, gateway)

    _page_routes(router, gateway)

    @router.get(
        "/beats",
        tags=["status"],
        dependencies=security(required=not gateway.auth.open),
        responses={k: v for k, v in AUTH_ERRORS.items() if k != 403},
    )
    async def beats(request: Request) -> dict[str, Any]:
        """Every beat the token may see: readiness, event rates per second (total and per
        channel), events committed, Kafka lag, the beat's SSE subscribers, the gateway's
        upstream streams of it, and when it was last polled. A token with some channels of a
        beat sees only those; the beats' URLs and errors need the admin scope."""
        principal = gateway.principal(request)
        names = gateway.visible_beats(principal)
        return {"beats": [gateway.beat_report(name, principal) for name in names]}

    return router


def _page_routes(router: APIRouter, gateway: Gateway) -> None:
    """The dashboard and the API description, closed unless in ``--public-paths``."""

    @router.get("/", include_in_schema=False)
    async def dashboard(request: Request) -> FileResponse:
        gateway.guard(request, "/")
        return FileResponse(_DASHBOARD, media_type="text/html")

    @router.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        gateway.guard(request, "/openapi.json")
        return JSONResponse(request.app.openapi())

    @router.get("/asyncapi.json", include_in_schema=False)
    async def asyncapi(request: Request) -> JSONResponse:
        gateway.guard(request, "/asyncapi.json")
        return JSONResponse(gateway.asyncapi(request.url.netloc))

    @router.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> Response:
        gateway.guard(request, "/docs")
        return get_swagger_ui_html(
            openapi_url="openapi.json",
            title="Works Beats gateway",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )

    @router.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> Response:
        gateway.guard(request, "/redoc")
        return get_redoc_html(
            openapi_url="openapi.json",
            title="Works Beats gateway",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


def _health_routes(router: APIRouter, gateway: Gateway) -> None:
    @router.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @router.get(
        "/readyz",
        tags=["health"],
        responses={
            200: {"model": GatewayReadiness},
            503: {"model": GatewayReadiness, "description": "Not ready"},
        },
    )
    async def readyz() -> JSONResponse:
        """Ready when no beat is configured or at least one beat answered ready at the last
        poll (a gateway with some beats down still serves the others); says which are not
        (their errors, which name internal URLs, are in ``/beats`` for the admin scope)."""
        body = gateway.readiness()
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    public = "/metrics" in gateway.settings.public_paths or gateway.auth.open

    @router.get(
        "/metrics",
        tags=["health"],
        response_class=Response,  # its 200 is declared by prometheus_ok, not inferred
        dependencies=security(required=not public),
        responses={200: prometheus_ok(), **({} if public else AUTH_ERRORS)},
    )
    async def metrics(request: Request) -> Response:
        """The gateway's own Prometheus metrics (beats_gateway_*); a token with the admin or
        metrics scope unless ``/metrics`` is in ``--public-paths``."""
        gateway.guard(request, "/metrics", metrics=True)
        return Response(gateway.metrics.render(), media_type=PROMETHEUS_TEXT)


def _stream_routes(router: APIRouter, gateway: Gateway) -> None:
    @router.get(
        "/streams",
        tags=["streams"],
        response_class=EventSourceResponse,
        dependencies=security(required=not gateway.auth.open),
        responses={
            200: sse_ok("Every beat the token may read, merged"),
            **stream_errors(one_beat=False),
        },
        openapi_extra=FILTER_PARAMETERS,
        description="Every beat the token may read, merged (SSE). Each message's id is the "
        "position vector label=seq;label=seq (label: the beat, or beat/channel for a token "
        "scoped to channels; opaque when a beat is read from Kafka); resume with it as "
        "Last-Event-ID, or with 0 for everything. " + _FILTERS,
    )
    async def merged(
        request: Request,
        last_event_id_header: LastId = None,
        last_event_id: LastIdQuery = None,
    ) -> Response:
        principal = gateway.principal(request)
        keys = [
            key
            for key in gateway.merged_keys(principal)
            if key[1] is None or await gateway.channel_known(key[0], key[1])
        ]
        if not keys:
            raise gateway.auth.forbid(principal, "any beat")
        raw = last_event_id_header or last_event_id
        try:
            targets = gateway.resolve(keys, raw, None)
        except ValueError as exc:
            raise HTTPException(400, f"Last-Event-ID: {exc}") from None
        return await _open(gateway, request, principal, keys, targets, merged=True, raw=raw)

    @router.get(
        "/streams/{beat}",
        tags=["streams"],
        response_class=EventSourceResponse,
        dependencies=security(required=not gateway.auth.open),
        responses={200: sse_ok("Every channel of the beat"), **stream_errors(one_beat=True)},
        openapi_extra=FILTER_PARAMETERS,
        description="Every channel of one beat (SSE); ids are the beat's own sequences, "
        "replay as on the beat (a beat read from Kafka: opaque positions in its topics; "
        "resume with one as Last-Event-ID, or with 0 for everything Kafka keeps). " + _FILTERS,
    )
    async def beat_stream(
        request: Request,
        beat: str,
        last_event_id_header: LastId = None,
        last_event_id: LastIdQuery = None,
    ) -> Response:
        return await _single(gateway, request, (beat, None), last_event_id_header, last_event_id)

    @router.get(
        "/streams/{beat}/{channel}",
        tags=["streams"],
        response_class=EventSourceResponse,
        dependencies=security(required=not gateway.auth.open),
        responses={200: sse_ok("The channel's events"), **stream_errors(one_beat=True)},
        openapi_extra=FILTER_PARAMETERS,
        description="One channel of one beat (SSE); ids are the beat's own sequences, "
        "replay as on the beat (a beat read from Kafka: opaque positions in its topic). "
        + _FILTERS,
    )
    async def channel_stream(
        request: Request,
        beat: str,
        channel: str,
        last_event_id_header: LastId = None,
        last_event_id: LastIdQuery = None,
    ) -> Response:
        principal = gateway.principal(request)
        if beat in gateway.settings.beats and principal.allows(beat, channel):
            known = await gateway.channel_known(beat, channel)
            if known is None:
                raise HTTPException(
                    503,
                    f"the {beat} beat has not told its channels yet (unreachable)",
                    headers={"Retry-After": str(gateway.settings.retry_after)},
                )
            if not known:
                raise HTTPException(404, f"the {beat} beat has no channel {channel!r}")
        return await _single(gateway, request, (beat, channel), last_event_id_header, last_event_id)


async def _single(
    gateway: Gateway, request: Request, key: StreamKey, header: str | None, query: str | None
) -> Response:
    principal = gateway.principal(request)
    beat, channel = key
    if beat not in gateway.settings.beats:
        raise HTTPException(404, f"no beat named {beat!r} behind this gateway")
    if not principal.allows(beat, channel):
        raise gateway.auth.forbid(principal, stream_label(key))
    raw = header or query or None
    try:
        if gateway.in_kafka(beat):
            targets = gateway.resolve([key], raw, None)
        else:
            targets = gateway.resolve([key], None, parse_last_event_id(header, query))
    except ValueError as exc:
        detail = exc if gateway.in_kafka(beat) else "must be a non-negative integer"
        raise HTTPException(400, f"Last-Event-ID: {detail}") from None
    return await _open(gateway, request, principal, [key], targets, merged=False, raw=raw)


async def _open(
    gateway: Gateway,
    request: Request,
    principal: Principal,
    keys: list[StreamKey],
    targets: list[tuple[str, Hashable, int | None]],
    *,
    merged: bool,
    raw: str | None,
) -> Response:
    try:
        filter = parse_query(request.query_params.multi_items())
    except FilterError as exc:
        raise HTTPException(400, f"bad filter: {exc}") from None
    client = gateway.open_client(principal, filter, keys, targets, merged=merged, raw=raw)
    if isinstance(client, str):
        retry = str(gateway.settings.retry_after)
        return JSONResponse(
            {"error": "busy", "error_description": _BUSY[client]},
            status_code=503,
            headers={"Retry-After": retry},
        )
    try:
        await client.positioned(_POSITION_WAIT)
    except BaseException:
        client.release()
        raise
    return SseResponse(
        client.frames(),
        headers=SSE_HEADERS,
        ping=gateway.settings.sse_heartbeat,
        send_timeout=gateway.settings.sse_send_timeout,
        on_send_timeout=gateway.metrics.send_timeouts.inc,
        background=BackgroundTask(client.release),
    )
