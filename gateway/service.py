"""The gateway as a running service: ``beats run gateway``.

:func:`build` wires settings, auth, the upstream pool, the status poller and the HTTP app;
:meth:`Gateway.serve` runs them until ``shutdown`` is set. Shutdown is graceful and bounded by
``--shutdown-timeout``: the gateway reports not ready, ends every client stream (clients
resume elsewhere with ``Last-Event-ID``), closes the upstream streams, then stops HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Hashable
from typing import Any, cast

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.middleware.cors import CORSMiddleware

from beats.catalog import EVENTS
from common.asyncapi import Publisher, gateway_document
from common.bodies import limit_bodies
from common.http import UvicornServer, serve_http, server_config
from common.lifecycle import listen
from common.metrics import Metrics
from common.openapi import DOCS_ASSETS_DIR
from common.openapi import install as install_openapi
from common.service import wait_shutdown
from common.supervise import supervise
from gateway.auth import Authenticator, Principal, describe, load_tokens
from gateway.clients import ClientStream
from gateway.filters import Filter
from gateway.kafka import KafkaPartition, KafkaReader, PartitionKey, partition_label
from gateway.metrics import GatewayMetrics
from gateway.positions import encode_position, named_positions, parse_position
from gateway.ring import RingStream
from gateway.routes import DOCS_ASSETS, gateway_router, install_error_handlers
from gateway.settings import GatewaySettings
from gateway.status import StatusPoller, visible_report
from gateway.upstream import StreamKey, Upstream, UpstreamPool, stream_label

__all__ = ["Gateway", "GatewaySettings", "build", "main"]

_log = logging.getLogger(__name__)


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.beats = settings.beats
        self._kafka_beats = frozenset(settings.kafka_beats)
        self.metrics = GatewayMetrics()
        entries = load_tokens(settings.tokens_file) if settings.tokens_file else None
        self.auth = Authenticator(entries)
        if entries is not None:
            _log.info("gateway: %d tokens: %s", len(entries), describe(entries))
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, read=settings.upstream_read_timeout),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            trust_env=False,
        )
        self.pool = UpstreamPool(
            self._upstream, linger=settings.upstream_linger, metrics=self.metrics
        )
        self.kafka = (
            KafkaReader(settings, metrics=self.metrics, on_new=self._partitions_found)
            if settings.kafka_beats
            else None
        )
        self.poller = StatusPoller(
            settings.url_beats, http=self.http, interval=settings.status_interval
        )
        self.clients: set[ClientStream] = set()
        self._per_token: dict[str, int] = {}
        self.stopping = False
        self.app = self._create_app()

    def _create_app(self) -> FastAPI:
        app = FastAPI(
            title="Works Beats gateway",
            description="Auth, fan-out, replay and filters in front of the beats.",
            version="0.1.0",
            docs_url=None,  # served by gateway_router, behind the token check
            redoc_url=None,
            openapi_url=None,
        )
        if self.settings.cors_origins:
            origins = self.settings.cors_origins
            app.add_middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_credentials="*" not in origins,
                allow_methods=["GET"],
                allow_headers=["Authorization", "Last-Event-ID", "Cache-Control"],
            )
        install_error_handlers(app, self)
        install_openapi(app)
        app.include_router(gateway_router(self))
        app.mount(DOCS_ASSETS, StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")
        limit_bodies(
            app, max_bytes=self.settings.http_max_body_bytes, on_rejected=self._http_rejected
        )
        return app

    def _http_rejected(self, reason: str) -> None:
        self.metrics.http_rejected.labels(reason).inc()

    # -- requests ------------------------------------------------------------------------------

    def principal(self, request: Request) -> Principal:
        """The caller (``AuthError``: 401, or 400 for conflicting tokens); the token itself is
        never logged."""
        token = self.auth.presented(
            request.headers.getlist("authorization"),
            request.query_params.getlist("access_token"),
            request.headers.getlist("cookie"),
        )
        return self.auth.authenticate(token)

    def asyncapi(self, http: str) -> dict[str, Any]:
        """The gateway's AsyncAPI document (its server at ``http``): the streams of every beat
        behind it, with the event types of the beats it knows by name (:mod:`beats.catalog`)
        and the channels each beat told at the last poll."""
        beats = [
            Publisher(
                name=name,
                events=EVENTS.get(name, ()),
                channels=self._channels_of(name),
                http=http,
            )
            for name in self.settings.beats
        ]
        return gateway_document(beats, http=http)

    def guard(self, request: Request, path: str, *, metrics: bool = False) -> None:
        """Refuse a request for one of the gateway's own pages unless it is in
        ``--public-paths``: any valid token (the ``metrics`` or ``admin`` scope for
        ``/metrics``)."""
        if path in self.settings.public_paths or self.auth.open:
            return
        principal = self.principal(request)
        if metrics and not principal.metrics:
            raise self.auth.forbid(principal, "/metrics (scope admin or metrics)")

    def _channels_of(self, beat: str) -> tuple[str, ...]:
        if self.kafka is not None and beat in self.kafka.topics:
            return tuple(sorted(self.kafka.topics[beat]))
        status = self.poller.statuses.get(beat)
        return tuple(sorted(status.channels or ())) if status else ()

    def _upstream(self, key: Hashable) -> RingStream:
        """A new upstream: a Kafka partition for a (beat, channel, partition) key, else the
        beat's SSE stream."""
        size, ring_bytes = self.settings.ring_size, self.settings.ring_bytes
        if self.kafka is not None and isinstance(key, tuple) and len(key) == 3:
            return KafkaPartition(key, reader=self.kafka, ring_size=size, ring_bytes=ring_bytes)
        beat, channel = cast(StreamKey, key)
        return Upstream(
            (beat, channel), self.settings.url_beats[beat], http=self.http, ring_size=size,
            ring_bytes=ring_bytes, metrics=self.metrics,
        )  # fmt: skip

    def in_kafka(self, beat: str) -> bool:
        """Whether ``beat`` is read from its Kafka topics (named without a URL)."""
        return beat in self._kafka_beats

    async def channel_known(self, beat: str, channel: str) -> bool | None:
        """Whether ``beat`` has ``channel`` (``None``: its channels are not known yet, the beat
        has not answered). Asks the beat when the poller has not learned them yet. In Kafka
        mode: whether the channel's topic exists (``None`` until Kafka answered)."""
        if self.kafka is not None and self.in_kafka(beat):
            return self.kafka.channel_known(beat, channel)
        status = self.poller.statuses[beat]
        if not status.channels_known:
            await self.poller.poll(status)
        if not status.channels_known:
            return None
        return status.channels is None or channel in status.channels

    def visible_beats(self, principal: Principal) -> list[str]:
        return [name for name in self.beats if principal.any_scope(name)]

    def merged_keys(self, principal: Principal) -> list[StreamKey]:
        """The upstreams of ``/streams``: each whole beat in scope, else its scoped channels."""
        keys: list[StreamKey] = []
        for beat in self.beats:
            if principal.allows(beat):
                keys.append((beat, None))
            else:
                keys.extend((beat, channel) for channel in principal.channels(beat))
        return keys

    def resolve(
        self, keys: list[StreamKey], raw: str | None, resume: int | None
    ) -> list[tuple[str, Hashable, int | None]]:
        """The upstreams of the streams ``keys`` (label, key, resume position): one per
        stream in URL mode, one per topic-partition in Kafka mode. ``raw``: the client's id
        (:mod:`gateway.positions`; ``ValueError`` if bad), or ``resume`` for one URL stream."""
        units: list[tuple[str, Hashable]] = []
        for key in keys:
            if self.kafka is not None and self.in_kafka(key[0]):
                units += [(partition_label(p), p) for p in self.kafka.partitions_of(*key)]
            else:
                units.append((stream_label(key), key))
        if raw is None:
            return [(label, key, resume) for label, key in units]
        partitions = frozenset(label for label, key in units if len(cast(tuple[Any], key)) == 3)
        positions = parse_position(raw, [label for label, _ in units], partitions=partitions)
        return [(label, key, positions[label]) for label, key in units]

    def open_client(
        self,
        principal: Principal,
        filter: Filter | None,
        keys: list[StreamKey],
        targets: list[tuple[str, Hashable, int | None]],
        *,
        merged: bool,
        raw: str | None = None,
    ) -> ClientStream | str:
        """A client stream subscribed to ``targets`` (:meth:`resolve`) of the streams
        ``keys``, or why not (the caps, each counted): ``max_streams``, ``token_streams``
        (``--max-streams-per-token``), ``upstreams`` (``--max-upstreams``), ``kafka`` (a
        Kafka-mode stream before the gateway could read the topics). ``raw``: the client's
        id, whose positions in partitions found later are kept (:meth:`_partitions_found`)."""
        refused = self._refusal(principal, keys, [key for _, key, _ in targets])
        if refused is not None:
            self.metrics.refused.labels(refused).inc()
            if refused == "max_streams":
                self.metrics.rejected.inc()
            return refused
        kafka = [key for key in keys if self.in_kafka(key[0])]
        client = ClientStream(
            metrics=self.metrics,
            queue_size=self.settings.client_queue_size,
            queue_bytes=self.settings.client_queue_bytes,
            merged=merged or bool(kafka),
            filter=filter,
            principal=principal,
            on_close=self._client_closed,
            scope=kafka,
            encode_id=encode_position if kafka else None,
            named=named_positions(raw) if kafka else None,
        )
        self.clients.add(client)
        self._per_token[principal.name] = self._per_token.get(principal.name, 0) + 1
        self.metrics.clients.set(len(self.clients))
        self.metrics.connections.inc()
        client.open((label, self.pool.acquire(key), resume) for label, key, resume in targets)
        return client

    def _partitions_found(self, new: list[PartitionKey]) -> None:
        """Kafka mode: new topics or partitions join the clients that read them, from their
        first offset (everything in them is newer than the client's position), or from the
        client's position in one its id names (this replica had not seen it yet: the client
        read it on another)."""
        for client in list(self.clients):
            for key in new:
                if (key[0], None) not in client.scope and key[:2] not in client.scope:
                    continue
                if self.pool.get(key) is None and self.pool.count >= self.settings.max_upstreams:
                    _log.warning("gateway: --max-upstreams reached, not reading %s", key)
                    self.metrics.refused.labels("upstreams").inc()
                    continue
                label = partition_label(key)
                client.add(label, self.pool.acquire(key), client.named.get(label, -1))

    def _refusal(
        self, principal: Principal, streams: list[StreamKey], keys: list[Hashable]
    ) -> str | None:
        if len(self.clients) >= self.settings.max_streams or self.stopping:
            return "max_streams"
        waiting = self.kafka is not None and not self.kafka.metadata_known
        if waiting and any(self.in_kafka(beat) for beat, _ in streams):
            return "kafka"
        held = self._per_token.get(principal.name, 0)
        if not self.auth.open and held >= self.settings.max_streams_per_token:
            return "token_streams"
        opening = sum(1 for key in set(keys) if self.pool.get(key) is None)
        if opening and self.pool.count + opening > self.settings.max_upstreams:
            return "upstreams"
        return None

    def _client_closed(self, client: ClientStream) -> None:
        if client in self.clients:
            self.clients.discard(client)
            name = client.principal.name
            self._per_token[name] = self._per_token.get(name, 1) - 1
            if self._per_token[name] <= 0:
                del self._per_token[name]
            for subscription in client.subscriptions:
                self.pool.release(subscription.upstream)
            self.metrics.clients.set(len(self.clients))

    def readiness(self) -> dict[str, Any]:
        """``/readyz``: ready when no beat is configured or at least one can be read (a beat
        that answered ready at the last poll, or Kafka for the Kafka-mode beats)."""
        beats = {
            name: {"ready": s.ready, "reachable": s.reachable}
            for name, s in self.poller.statuses.items()
        }
        body: dict[str, Any] = {"beats": beats, "streams": len(self.clients)}
        ready = not self.settings.beats or any(s.ready for s in self.poller.statuses.values())
        if self.kafka is not None:
            kafka_ready = self.kafka.connected and self.kafka.metadata_known
            for name in self.settings.kafka_beats:
                beats[name] = {"ready": kafka_ready, "reachable": self.kafka.connected}
            body["kafka"] = {"connected": self.kafka.connected, "error": self.kafka.error}
            ready = ready or kafka_ready
        return {"ready": ready and not self.stopping, **body}

    def beat_report(self, name: str, principal: Principal) -> dict[str, Any]:
        """``/beats`` for one beat, as much as ``principal`` may see (:func:`status.visible`)."""
        if self.kafka is not None and self.in_kafka(name):
            report = self.kafka.report(name)
        else:
            report = self.poller.statuses[name].report()
        report["gateway"] = [
            {
                "stream": upstream.label,
                "channel": upstream.channel,
                "connected": upstream.connected,
                "head": upstream.head,
                "clients": upstream.refs,
                "ring": len(upstream.ring),
                "ring_bytes": upstream.ring_held,
            }
            for upstream in self.pool.all()
            if upstream.beat == name
        ]
        return visible_report(report, principal, principal.channels(name))

    # -- lifecycle -----------------------------------------------------------------------------

    def listen(self) -> socket.socket:
        """The gateway's listening socket (:class:`~common.lifecycle.CannotListen` if not)."""
        return listen(self.settings.host, self.settings.port, who="gateway")

    async def serve(self, shutdown: asyncio.Event, *, sock: socket.socket | None = None) -> None:
        """Run until ``shutdown`` is set, then stop gracefully (see the module docstring).
        ``sock``: the listening socket if the caller bound it, else the gateway binds its own
        before it starts anything."""
        sock = sock or self.listen()
        if self.auth.open:
            _log.warning(
                "gateway: NO --tokens-file: the gateway is OPEN, anyone who can reach "
                "%s:%d reads every beat. Give --tokens-file in production.",
                self.settings.host,
                self.settings.port,
            )
        config = server_config(
            self.app,
            self.settings,
            on_head_timeout=self.metrics.http_head_timeouts.inc,
            on_rejected=self._http_rejected,
            access_log=False,  # query strings may hold access_token
        )
        server = UvicornServer(config)
        try:
            async with asyncio.TaskGroup() as tasks:
                self.pool.start(tasks)
                pollers = [self._start_poller(tasks, name) for name in self.poller.statuses]
                if self.kafka is not None:
                    pollers.append(self._start_reader(tasks, self.kafka))
                http = tasks.create_task(serve_http(server, sock), name="gateway:http")
                await wait_shutdown(shutdown, http)
                await self._stop(server, http, pollers)
        finally:
            sock.close()
            await self.http.aclose()

    def _start_poller(self, tasks: asyncio.TaskGroup, name: str) -> asyncio.Task[None]:
        restarts = cast(Metrics, self.metrics)  # supervise() only counts .restarts
        return tasks.create_task(
            supervise(f"status:{name}", lambda: self.poller.run(name), metrics=restarts),
            name=f"gateway:status:{name}",
        )

    def _start_reader(self, tasks: asyncio.TaskGroup, reader: KafkaReader) -> asyncio.Task[None]:
        restarts = cast(Metrics, self.metrics)
        return tasks.create_task(
            supervise("kafka", reader.run, metrics=restarts), name="gateway:kafka"
        )

    async def _stop(
        self, server: uvicorn.Server, http: asyncio.Task[None], pollers: list[asyncio.Task[None]]
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_timeout
        _log.info("gateway: shutting down (%d streams)", len(self.clients))
        self.stopping = True
        for client in list(self.clients):
            client.close()
        for poller in pollers:
            poller.cancel()
        self.pool.close_all()
        server.should_exit = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(http), max(0.5, deadline - loop.time()))
        if not http.done():
            http.cancel()


def build(settings: GatewaySettings) -> Gateway:
    return Gateway(settings)


async def main(settings: GatewaySettings, shutdown: asyncio.Event) -> None:
    await build(settings).serve(shutdown)
