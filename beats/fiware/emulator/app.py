"""The Orion emulator as an app: ``beats emulate orion`` (port 1026).

A faithful subset of Orion's NGSI v2 API (``doc/manuals/orion-api.md``) and of an NGSI-LD broker
(Orion-LD): entities (:mod:`.v2_routes`, :mod:`.ld_routes`), subscriptions
(:mod:`.subscriptions`), notifications (:mod:`.bodies`, :mod:`.notifier`), tenants. Every v2
response carries ``Fiware-Correlator`` (the request's, or a new one) as Orion does.

Admin (not Orion's): ``POST /admin/restart?lose_subscriptions=true&lose_entities=false``
simulates a restart (without its database, the subscriptions are gone); ``GET /healthz``.
``GET /version`` answers like Orion's.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import Field

from beats.fiware.emulator.broker import Broker
from beats.fiware.emulator.ld_bodies import LdMode
from beats.fiware.emulator.ld_routes import ld_routes
from beats.fiware.emulator.model import LdError, OrionError
from beats.fiware.emulator.notifier import Notifier
from beats.fiware.emulator.scenario import run_scenario
from beats.fiware.emulator.subscriptions import subscription_routes
from beats.fiware.emulator.v2_routes import v2_routes
from common.http import serve_emulator
from common.lifecycle import run_until
from common.openapi import install as install_openapi
from common.settings import CommandSettings, LogLevel

__all__ = ["EmulatorSettings", "create_app", "main", "serve"]


class EmulatorSettings(CommandSettings):
    """Run the Orion (NGSI v2 and NGSI-LD) emulator."""

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(1026, description="HTTP port (Orion's own).")
    scenario: bool = Field(False, description="Rooms and parking spots changing.")
    scenario_interval: float = Field(1.0, description="Seconds between scenario changes.")
    ld_mode: LdMode = Field(
        "default",
        description="How NGSI-LD notifications are sent: default (Orion-LD as it ships: "
        "Ngsiv2-AttrsFormat header, User-Agent orion/…) or experimental (Orion-LD "
        "-experimental: Ngsild-Attribute-Format header).",
    )
    log_level: LogLevel = Field("info", description="Log level.")


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OrionError)
    async def orion_error(request: Request, exc: OrionError) -> Response:
        return JSONResponse({"error": exc.error, "description": exc.description}, exc.status)

    @app.exception_handler(LdError)
    async def ld_error(request: Request, exc: LdError) -> Response:
        body = {"type": f"https://uri.etsi.org/ngsi-ld/errors/{exc.kind}", "title": exc.title}
        if exc.detail:
            body["detail"] = exc.detail
        return JSONResponse(body, exc.status, media_type="application/json")


async def _correlator(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    correlator = request.headers.get("fiware-correlator") or str(uuid.uuid4())
    request.state.correlator = correlator
    response = await call_next(request)
    if request.url.path.startswith("/v2"):
        response.headers["Fiware-Correlator"] = correlator
    return response


def _admin_routes(app: FastAPI, broker: Broker) -> None:
    @app.get("/version")
    async def version() -> dict[str, Any]:
        return {"orion": {"version": "4.7.0-emulator", "uptime": "0 d, 0 h, 0 m, 0 s"}}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/admin/restart")
    async def restart(
        lose_subscriptions: bool = True, lose_entities: bool = False
    ) -> dict[str, Any]:
        broker.restart(lose_subscriptions=lose_subscriptions, lose_entities=lose_entities)
        return {"subscriptions": len(broker.subscriptions)}


def _lifespan(broker: Broker, scenario: bool, interval: float, seed: int | None) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with broker.notifier.running(), asyncio.TaskGroup() as tasks:
            runner = None
            if scenario:
                runner = tasks.create_task(
                    run_scenario(broker, interval=interval, seed=seed), name="orion-scenario"
                )
            try:
                yield
            finally:
                if runner is not None:
                    runner.cancel()

    return lifespan


def create_app(
    *,
    scenario: bool = False,
    scenario_interval: float = 1.0,
    scenario_seed: int | None = None,
    notify_timeout: float = 5.0,
    queue_size: int = 1000,
    ld_mode: LdMode = "default",
) -> FastAPI:
    """The emulator. ``app.state.broker`` is the :class:`~.broker.Broker` (for tests and the
    demo: ``broker.restart(lose_subscriptions=True)``). ``notify_timeout`` is Orion's
    ``-httpTimeout`` (seconds); ``queue_size`` bounds each subscription's notification queue;
    ``ld_mode`` is Orion-LD's notification mode (``default`` or ``experimental``)."""
    broker = Broker(Notifier(timeout=notify_timeout, queue_size=queue_size), ld_mode=ld_mode)
    app = FastAPIOffline(
        title="Orion / NGSI-LD emulator",
        lifespan=_lifespan(broker, scenario, scenario_interval, scenario_seed),
    )
    install_openapi(app)  # a malformed parameter: 400, as documented
    app.state.broker = broker
    app.middleware("http")(_correlator)
    _error_handlers(app)
    v2 = v2_routes(broker)
    subscription_routes(v2, broker, ld=False)
    app.include_router(v2)
    app.include_router(ld_routes(broker))
    _admin_routes(app, broker)
    return app


async def serve(
    *, host: str = "127.0.0.1", port: int = 1026, sock: socket.socket | None = None, **options: Any
) -> None:
    """Serve :func:`create_app` (``options`` are its keywords) until cancelled; a cancelled
    server still shuts down gracefully (lifespan, notification workers) before returning.
    ``sock``: already bound (else ``host:port`` is bound first)."""
    await serve_emulator(create_app(**options), name="orion", host=host, port=port, sock=sock)


async def main(settings: EmulatorSettings, shutdown: asyncio.Event) -> None:
    """``beats emulate orion``: serve until ``shutdown`` is set."""
    work = serve(
        host=settings.host,
        port=settings.port,
        scenario=settings.scenario,
        scenario_interval=settings.scenario_interval,
        ld_mode=settings.ld_mode,
    )
    await run_until(shutdown, work, name="orion-emulator")
