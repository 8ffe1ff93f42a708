"""An OpenCTI live-stream emulator: ``beats emulate opencti`` (port 4000).

Faithful to OpenCTI's ``sseMiddleware.js`` as a consumer sees it (see :mod:`.channel` for the
frames): ``GET /stream`` (the raw stream) and ``GET /stream/{id}`` (the built-in ``live`` stream
or a collection), ``Authorization: Bearer <token>``; the refusals OpenCTI sends: 401 without or
with a wrong token and for an unknown (or deleted) collection, 410 for a stopped one (a running
connection to it ends), 500 for ``recover`` without a start. Start from ``from`` (query or
header) or ``Last-Event-ID``: ``0``/``0-0`` the beginning, an id resumes after it, a date from
that time, absent "from now". Live streams also take ``recover`` (``recover-date``),
``listen-delete``, ``with-inferences`` and ``delay`` (``event-delay``).

``POST /graphql``: OpenCTI's GraphQL API, its ``markingDefinitions`` query (:mod:`.graphql`).

Test and demo hooks, not OpenCTI's: ``drop_every``; a generated scenario (``scenario_rate``);
the Python API (``app.state.opencti``, :class:`OpenctiEmulator`) and its HTTP form
``POST /admin/events`` (events, or raw malformed frames; ``shared_id``),
``POST /admin/markings`` (platform-only marking definitions), ``POST /admin/streams/{id}``
(create; ``public``), ``POST /admin/streams/{id}/stop|start``,
``DELETE /admin/streams/{id}``.
"""

from __future__ import annotations

import asyncio

from pydantic import Field

from beats.opencti.emulator.app import create_app, serve
from beats.opencti.emulator.core import Collection, OpenctiEmulator, StreamStore
from common.lifecycle import run_until
from common.settings import CommandSettings, LogLevel

__all__ = [
    "Collection",
    "EmulatorSettings",
    "OpenctiEmulator",
    "StreamStore",
    "create_app",
    "main",
    "serve",
]


class EmulatorSettings(CommandSettings):
    """Run the OpenCTI live-stream emulator."""

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(4000, description="HTTP port.")
    token: str = Field("emulator-token", description="The bearer token the stream accepts.")
    heartbeat_interval: float = Field(5.0, description="Seconds between heartbeats.")
    scenario_rate: float = Field(0.0, description="Generated events per second (0: none).")
    drop_every: int | None = Field(None, description="Close connections every N data frames.")
    trimming: int = Field(
        0, ge=0, description="Keep at most N stream entries, as OpenCTI's redis:trimming (0: all)."
    )
    graphql: bool = Field(
        True, description="Serve POST /graphql (markingDefinitions); off: a platform without it."
    )
    log_level: LogLevel = Field("info", description="Log level.")


async def main(settings: EmulatorSettings, shutdown: asyncio.Event) -> None:
    """``beats emulate opencti``: serve until ``shutdown`` is set."""
    options = settings.model_dump(exclude={"log_level"})
    await run_until(shutdown, serve(**options), name="opencti-emulator")
