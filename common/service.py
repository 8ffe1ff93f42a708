"""One beat as a running service: event log, hub, Kafka forwarder, source, HTTP app.

:class:`Beat` wires the kernel together the same way for every beat; a beat only brings its
:class:`~common.pipeline.Source` (and optional extra routes, such as FIWARE's ``/notify``).

The HTTP port is bound first, before the log is opened or the source started: a port that
cannot be had ends :meth:`Beat.serve` with :class:`~common.lifecycle.CannotListen` before
anything was consumed.

Shutdown (SIGTERM/SIGINT, or :meth:`Beat.serve`'s ``shutdown`` event) is graceful and bounded by
``shutdown_timeout``: the source is stopped first (no new input, nothing unacknowledged is
lost), queued commits are written, SSE streams are closed (clients resume with
``Last-Event-ID``), Kafka gets what is left of the time to catch up, then the log is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import uvicorn
from fastapi import APIRouter
from fastapi_offline import FastAPIOffline

from common.asyncapi import Publisher
from common.bodies import limit_bodies
from common.eventlog import EventLog
from common.http import UvicornServer, serve_http, server_config
from common.hub import Hub
from common.kafka import KafkaForwarder
from common.lifecycle import listen
from common.metrics import Metrics
from common.openapi import install as install_openapi
from common.pipeline import DEAD_LETTER_CHANNEL, Pipeline, Readiness, Source
from common.routes import beat_router
from common.schema import EventSpec, dead_letter_spec
from common.settings import BeatSettings
from common.supervise import supervise

__all__ = ["Beat", "UvicornServer", "wait_shutdown", "warn_if_public"]

_log = logging.getLogger(__name__)


class Beat:
    def __init__(
        self,
        *,
        name: str,
        settings: BeatSettings,
        source: Source,
        routers: Sequence[APIRouter] = (),
        description: str = "",
        max_body_bytes: int | None = None,
        channels: Iterable[str] | None = None,
        dead_letter_extensions: Mapping[str, Any] | None = None,
        events: Sequence[EventSpec] = (),
    ) -> None:
        """``max_body_bytes``: the largest request body any route reads (default
        ``--http-max-body-bytes``; FIWARE's ``/notify`` has its own bound). ``channels``: every
        channel the beat can publish to (its ``deadletter`` channel is added);
        ``/events/{channel}`` answers 404 for others. ``None``: any channel (tests).
        ``dead_letter_extensions``: added to every dead letter (OpenCTI: ``tlp: red``).
        ``events``: the event types the beat emits (``beats/<beat>/schema.py``), for its
        AsyncAPI document; its dead letters are added."""
        self.name = name
        self.channels = None if channels is None else frozenset({*channels, DEAD_LETTER_CHANNEL})
        self.settings = settings
        self.source = source
        self.events = (*events, dead_letter_spec(name, dead_letter_extensions))
        self.metrics = Metrics(name)
        self.readiness = Readiness()
        self.log = EventLog(
            settings.data_dir / f"{name}.db",
            retention_count=settings.retention_count,
            retention_age=settings.retention_age,
            synchronous=settings.log_sync,
            check=settings.log_check,
            observe_commit=self.metrics.append_seconds.observe,
            observe_failure=lambda kind: self.metrics.log_failures.labels(kind).inc(),
        )
        self.hub = Hub(
            metrics=self.metrics,
            queue_size=settings.sse_queue_size,
            queue_bytes=settings.sse_queue_bytes,
        )
        self.log.add_listener(self.hub.publish)
        self.pipeline = Pipeline(
            beat=name,
            log=self.log,
            metrics=self.metrics,
            readiness=self.readiness,
            dead_letter_extensions=dead_letter_extensions,
        )
        self.forwarder: KafkaForwarder | None = None
        if settings.kafka_bootstrap:
            self.forwarder = KafkaForwarder(
                beat=name, log=self.log, settings=settings, metrics=self.metrics
            )
        # /docs and /redoc with Swagger UI and ReDoc from the fastapi-offline package: no CDN
        self.app = FastAPIOffline(title=f"{name} beat", description=description, version="0.1.0")
        install_openapi(self.app)
        self.app.include_router(beat_router(self))
        for router in routers:
            self.app.include_router(router)
        limit_bodies(
            self.app,
            max_bytes=max(settings.http_max_body_bytes, max_body_bytes or 0),
            on_rejected=self._http_rejected,
        )

    def publisher(self, http: str) -> Publisher:
        """The beat as its AsyncAPI document shows it, its HTTP server at ``http``."""
        settings = self.settings
        return Publisher(
            name=self.name,
            events=self.events,
            channels=tuple(sorted(self.channels or ())),
            http=http,
            kafka_prefix=settings.kafka_topic_prefix if settings.kafka_bootstrap else None,
            description=self.app.description,
        )

    def _http_rejected(self, reason: str) -> None:
        self.metrics.http_rejected.labels(reason).inc()

    def listen(self) -> socket.socket:
        """The beat's listening socket (:class:`~common.lifecycle.CannotListen` if not)."""
        return listen(self.settings.host, self.settings.port, who=f"{self.name} beat")

    async def serve(self, shutdown: asyncio.Event, *, sock: socket.socket | None = None) -> None:
        """Run until ``shutdown`` is set, then stop gracefully (see the module docstring).
        ``sock``: the listening socket, when the caller bound it (the demo binds every port
        before it starts anything); by default the beat binds its own first."""
        sock = sock or self.listen()
        config = server_config(
            self.app,
            self.settings,
            on_head_timeout=self.metrics.http_head_timeouts.inc,
            on_rejected=self._http_rejected,
        )
        server = UvicornServer(config)
        warn_if_public(self.settings.host, f"{self.name} beat")
        with contextlib.closing(sock):
            await self.log.open()
            if self.log.recovery is not None and self.log.recovery.kind is not None:
                self.metrics.log_recoveries.labels(self.log.recovery.kind).inc()
            try:
                await self._run(shutdown, server, sock)
            finally:
                await self.log.close()

    async def _run(
        self, shutdown: asyncio.Event, server: uvicorn.Server, sock: socket.socket
    ) -> None:
        async with asyncio.TaskGroup() as tasks:
            source = tasks.create_task(self._supervised_source(), name=f"{self.name}:source")
            kafka = self._start_forwarder(tasks)
            http = tasks.create_task(serve_http(server, sock), name=f"{self.name}:http")
            await wait_shutdown(shutdown, http)
            await self._stop(source, kafka, server, http)

    def _start_forwarder(self, tasks: asyncio.TaskGroup) -> asyncio.Task[None] | None:
        if self.forwarder is None:
            return None
        forwarder = self.forwarder
        return tasks.create_task(
            supervise("kafka", forwarder.run, metrics=self.metrics), name=f"{self.name}:kafka"
        )

    async def _supervised_source(self) -> None:
        await supervise("source", lambda: self.source.run(self.pipeline), metrics=self.metrics)

    async def _stop(
        self,
        source: asyncio.Task[None],
        kafka: asyncio.Task[None] | None,
        server: uvicorn.Server,
        http: asyncio.Task[None],
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_timeout
        _log.info("%s: shutting down", self.name)
        source.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await source
        self.readiness.set("shutdown", False, "shutting down")
        self.hub.close()
        server.should_exit = True
        if kafka is not None and self.forwarder is not None:
            kafka.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await kafka
            remaining = max(0.5, deadline - loop.time() - 1.0)
            if not await self.forwarder.flush(remaining):
                _log.warning(
                    "%s: %d events not yet in Kafka; they are kept and sent at the next start",
                    self.name,
                    self.forwarder.lag,
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(http), max(0.5, deadline - loop.time()))
        if not http.done():
            http.cancel()


async def wait_shutdown(shutdown: asyncio.Event, http: asyncio.Task[None]) -> None:
    """Return when ``shutdown`` is set or the HTTP server stopped (re-raising its failure)."""
    waiter = asyncio.create_task(shutdown.wait(), name="shutdown-wait")
    try:
        await asyncio.wait({waiter, http}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if http.done():
        http.result()


def warn_if_public(host: str, what: str) -> None:
    """The beats' own HTTP ports are an internal interface (no auth: the gateway is the front
    door); say so loudly when one listens on more than the loopback interface."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        _log.warning(
            "%s: listening on %s, not only on loopback: its HTTP port has no authentication "
            "(every event, every TLP level); keep it reachable by the gateway only "
            "(a private network, a Kubernetes NetworkPolicy)",
            what,
            host,
        )
