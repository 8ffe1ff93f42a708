"""HTTP routes every beat serves: health, readiness, metrics and the SSE streams."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sse_starlette import EventSourceResponse

from common.asyncapi import beat_document
from common.openapi import PROMETHEUS_TEXT, error, prometheus_ok, sse_ok
from common.sse import event_stream, parse_last_event_id
from common.sse_response import SseResponse

if TYPE_CHECKING:
    from common.service import Beat

__all__ = ["SSE_HEADERS", "beat_router"]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
BAD_LAST_ID = "Last-Event-ID must be a non-negative integer"

LastId = Annotated[str | None, Header(alias="Last-Event-ID")]
LastIdQuery = Annotated[
    str | None, Query(description="Resume after this sequence (0: everything kept).")
]


class Check(BaseModel):
    ok: bool
    detail: str


class LogPosition(BaseModel):
    head: int
    purged_through: int


class Subscribers(BaseModel):
    subscribers: int


class KafkaState(BaseModel):
    connected: bool
    lag: int
    last_error: str | None


class Readiness(BaseModel):
    """The body of ``/readyz``, 200 or 503 alike."""

    beat: str
    ready: bool
    checks: dict[str, Check]
    log: LogPosition
    sse: Subscribers
    kafka: KafkaState | None = None


class Channels(BaseModel):
    channels: list[str] | None


_READYZ: dict[int | str, Any] = {
    200: {"model": Readiness},
    503: {"model": Readiness, "description": "Not ready"},
}
_STREAM_ERRORS: dict[int | str, Any] = {400: error(BAD_LAST_ID)}


async def readiness_report(beat: Beat) -> dict[str, Any]:
    """The beat's checks, and whether its log can commit now (:meth:`EventLog.check`)."""
    checks = {name: {"ok": c.ok, "detail": c.detail} for name, c in beat.readiness.checks.items()}
    log_ok, log_detail = await beat.log.check()
    checks["log"] = {"ok": log_ok, "detail": log_detail}
    report: dict[str, Any] = {
        "beat": beat.name,
        "ready": beat.readiness.ready and log_ok,
        "checks": checks,
        "log": {"head": beat.log.head, "purged_through": beat.log.purged_through},
        "sse": {"subscribers": beat.hub.subscriber_count},
    }
    if beat.forwarder is not None:
        report["kafka"] = {
            "connected": beat.forwarder.connected,
            "lag": beat.forwarder.lag,
            "last_error": beat.forwarder.last_error,
        }
    return report


def beat_router(beat: Beat) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @router.get("/readyz", tags=["health"], responses=_READYZ)
    async def readyz() -> JSONResponse:
        """Ready when the source is connected and the log can commit now (its latest commit,
        or a probe commit, succeeded); says what is not. Kafka state is reported but does not
        make the beat unready (it lags and catches up)."""
        report = await readiness_report(beat)
        return JSONResponse(report, status_code=200 if report["ready"] else 503)

    @router.get(
        "/metrics",
        tags=["health"],
        response_class=Response,  # its 200 is declared by prometheus_ok, not inferred
        responses={200: prometheus_ok()},
    )
    async def metrics() -> Response:
        """Prometheus metrics."""
        beat.metrics.log_head.set(beat.log.head)
        beat.metrics.log_oldest.set(beat.log.purged_through + 1)
        if beat.forwarder is not None:
            beat.metrics.kafka_lag.set(beat.forwarder.lag)
        return Response(beat.metrics.render(), media_type=PROMETHEUS_TEXT)

    async def stream(
        channel: str | None, last_event_id_header: str | None, last_event_id: str | None
    ) -> EventSourceResponse:
        try:
            resume = parse_last_event_id(last_event_id_header, last_event_id)
        except ValueError:
            raise HTTPException(400, BAD_LAST_ID) from None
        return SseResponse(
            event_stream(
                log=beat.log,
                hub=beat.hub,
                metrics=beat.metrics,
                channel=channel,
                last_event_id=resume,
                page_bytes=beat.settings.sse_page_bytes,
            ),
            headers=SSE_HEADERS,
            ping=beat.settings.sse_heartbeat,
            send_timeout=beat.settings.sse_send_timeout,
            on_send_timeout=beat.metrics.sse_send_timeouts.inc,
        )

    @router.get(
        "/events",
        tags=["events"],
        response_class=EventSourceResponse,
        responses={200: sse_ok("Every channel's events"), **_STREAM_ERRORS},
    )
    async def all_events(
        last_event_id_header: LastId = None, last_event_id: LastIdQuery = None
    ) -> EventSourceResponse:
        """Server-Sent Events of every channel (see the README for the replay contract)."""
        return await stream(None, last_event_id_header, last_event_id)

    @router.get(
        "/events/{channel}",
        tags=["events"],
        response_class=EventSourceResponse,
        responses={
            200: sse_ok("The channel's events"),
            **_STREAM_ERRORS,
            404: error("The beat has no such channel"),
        },
    )
    async def channel_events(
        channel: str, last_event_id_header: LastId = None, last_event_id: LastIdQuery = None
    ) -> EventSourceResponse:
        """Server-Sent Events of one channel (404 for a channel the beat does not have)."""
        if beat.channels is not None and channel not in beat.channels:
            raise HTTPException(404, f"the {beat.name} beat has no channel {channel!r}")
        return await stream(channel, last_event_id_header, last_event_id)

    @router.get("/asyncapi.json", tags=["events"])
    async def asyncapi(request: Request) -> dict[str, Any]:
        """The AsyncAPI 3.0 document of the beat's SSE streams and Kafka topics: every event
        type with the JSON Schema of its data (generated from the code)."""
        publisher = beat.publisher(request.url.netloc)
        return beat_document(publisher, kafka=beat.settings.kafka_bootstrap)

    @router.get("/channels", tags=["events"], response_model=Channels)
    async def channels() -> dict[str, Any]:
        """The channels of ``/events/{channel}`` (``null``: any name is accepted)."""
        return {"channels": None if beat.channels is None else sorted(beat.channels)}

    return router
