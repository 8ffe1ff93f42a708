"""One beat as a running service: event log, hub, Kafka forwarder, source, HTTP app.

:class:`Beat` wires the kernel together the same way for every beat; a beat only brings its
:class:`~common.pipeline.Source` (and optional extra routes, such as FIWARE's ``/notify``).

Shutdown (SIGTERM/SIGINT, or :meth:`Beat.serve`'s ``shutdown`` event) is graceful and bounded by
``shutdown_timeout``: the source is stopped first (no new input, nothing unacknowledged is
lost), queued commits are written, SSE streams are closed (clients resume with
``Last-Event-ID``), Kafka gets what is left of the time to catch up, then the log is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Generator, Sequence

import uvicorn
from fastapi import APIRouter, FastAPI

from common.eventlog import EventLog
from common.http import server_config
from common.hub import Hub
from common.kafka import KafkaForwarder
from common.metrics import Metrics
from common.pipeline import Pipeline, Readiness, Source
from common.routes import beat_router
from common.settings import BeatSettings
from common.supervise import supervise

__all__ = ["Beat", "UvicornServer", "install_signal_handlers", "wait_shutdown"]

_log = logging.getLogger(__name__)


class UvicornServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the caller (several run in one process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Beat:
    def __init__(
        self,
        *,
        name: str,
        settings: BeatSettings,
        source: Source,
        routers: Sequence[APIRouter] = (),
        description: str = "",
    ) -> None:
        self.name = name
        self.settings = settings
        self.source = source
        self.metrics = Metrics(name)
        self.readiness = Readiness()
        self.log = EventLog(
            settings.data_dir / f"{name}.db",
            retention_count=settings.retention_count,
            retention_age=settings.retention_age,
            synchronous=settings.log_sync,
            observe_commit=self.metrics.append_seconds.observe,
        )
        self.hub = Hub(
            metrics=self.metrics,
            queue_size=settings.sse_queue_size,
            queue_bytes=settings.sse_queue_bytes,
        )
        self.log.add_listener(self.hub.publish)
        self.pipeline = Pipeline(
            beat=name, log=self.log, metrics=self.metrics, readiness=self.readiness
        )
        self.forwarder: KafkaForwarder | None = None
        if settings.kafka_bootstrap:
            self.forwarder = KafkaForwarder(
                beat=name, log=self.log, settings=settings, metrics=self.metrics
            )
        self.app = FastAPI(title=f"{name} beat", description=description, version="0.1.0")
        self.app.include_router(beat_router(self))
        for router in routers:
            self.app.include_router(router)

    async def serve(self, shutdown: asyncio.Event) -> None:
        """Run until ``shutdown`` is set, then stop gracefully (see the module docstring)."""
        config = server_config(
            self.app, self.settings, on_head_timeout=self.metrics.http_head_timeouts.inc
        )
        server = UvicornServer(config)
        await self.log.open()
        try:
            async with asyncio.TaskGroup() as tasks:
                source = tasks.create_task(self._supervised_source(), name=f"{self.name}:source")
                kafka = self._start_forwarder(tasks)
                http = tasks.create_task(server.serve(), name=f"{self.name}:http")
                await wait_shutdown(shutdown, http)
                await self._stop(source, kafka, server, http)
        finally:
            await self.log.close()

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


def install_signal_handlers(shutdown: asyncio.Event) -> None:
    """Set ``shutdown`` on SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, shutdown.set)
