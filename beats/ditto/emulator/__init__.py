"""An Eclipse Ditto emulator: ``beats emulate ditto`` (port 8090).

Enough of Ditto to develop and test against, following its public protocol and documentation:

* ``/ws/2`` WebSocket, with basic auth or ``Authorization: Bearer`` / ``access_token`` (HTTP 401
  at the handshake otherwise). Text commands ``START-SEND-EVENTS``, ``-MESSAGES``,
  ``-LIVE-EVENTS``, ``-LIVE-COMMANDS``, ``-POLICY-ANNOUNCEMENTS`` and their ``STOP-`` forms,
  answered with the exact ``<command>:ACK``; ``namespaces``, ``filter`` (an RQL subset,
  :mod:`beats.ditto.rql`, on twin and live events) and ``extraFields``; an invalid filter gets
  Ditto's ``rql.expression.invalid`` error frame instead of the ACK; ``JWT-TOKEN?jwtToken=...``
  is accepted without reply. Live messages, events and commands sent by a client are routed to
  the other subscribed sessions; a reply (with ``status``) answers the waiting HTTP sender; twin
  commands get an error frame (the emulator changes state over HTTP only).
* HTTP API ``/api/2/things/{id}[/<resource>]``: PUT (``created``/``modified``), PATCH
  (``merged``, ``application/merge-patch+json``), DELETE (``deleted``), GET (with ``fields``);
  ``GET /api/2/things?ids=``; ``GET /api/2/search/things`` (``namespaces``, ``filter``,
  ``option=size(n),cursor(c)``, pages of 25 by default as in Ditto); ``POST
  /api/2/things/{id}[/features/{f}]/inbox|outbox/messages/{subject}`` sends a live message and
  waits ``timeout`` (default 10 s, ``timeout=0``: fire-and-forget, 202) for a reply, else 408.
  Every change goes to every subscribed session as the matching twin event (revision,
  timestamp, headers with correlation id and originator).
* Slow sessions never slow others: each has a bounded queue (``session_buffer``) and what does
  not fit is dropped and counted, as Ditto drops events for slow WebSocket readers.
* Test switches: ``POST /admin/drop`` (or :meth:`Hub.drop_connections`) closes every WebSocket,
  ``POST /admin/burst`` makes N changes quickly, ``POST /admin/raw`` sends a raw text frame to
  every session (a binary one for ``application/octet-stream``), ``GET /admin/sessions`` shows
  queues; ``scenario``: connected cars.
"""

from __future__ import annotations

import asyncio

from pydantic import Field

from beats.ditto.emulator.app import create_app, serve
from beats.ditto.emulator.core import DittoEmulator
from beats.ditto.emulator.sessions import Hub
from common.lifecycle import run_until
from common.settings import CommandSettings, LogLevel

__all__ = ["DittoEmulator", "EmulatorSettings", "Hub", "create_app", "main", "serve"]


class EmulatorSettings(CommandSettings):
    """Run the Eclipse Ditto emulator."""

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8090, description="HTTP and WebSocket port.")
    username: str = Field("ditto", description="Basic-auth user name.")
    password: str = Field("ditto", description="Basic-auth password.")
    token: str | None = Field(None, description="A bearer token accepted as well.")
    session_buffer: int = Field(10000, description="Per-session queue; beyond it events drop.")
    scenario: bool = Field(False, description="Connected cars changing every interval.")
    scenario_interval: float = Field(1.0, description="Seconds between scenario changes.")
    log_level: LogLevel = Field("info", description="Log level.")


async def main(settings: EmulatorSettings, shutdown: asyncio.Event) -> None:
    """``beats emulate ditto``: serve until ``shutdown`` is set."""
    options = settings.model_dump(exclude={"log_level"})
    await run_until(shutdown, serve(**options), name="ditto-emulator")
