"""An embedded MQTT 3.1.1 broker (amqtt) for the demo: ``beats emulate mqtt``.

It needs nothing outside Python, so ``beats demo`` runs on a bare machine. It listens on its own
port (default 1884), since a system broker may already hold 1883. For MQTT 5, TLS, persistence
across broker restarts and real load, use a real broker (HiveMQ CE, Mosquitto).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

from amqtt.broker import Broker
from pydantic import Field

from common.lifecycle import listen
from common.settings import CommandSettings, LogLevel

__all__ = ["BrokerSettings", "embedded_broker", "main"]

_log = logging.getLogger(__name__)


class BrokerSettings(CommandSettings):
    """Run the embedded MQTT broker."""

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(1884, description="MQTT port.")
    log_level: LogLevel = Field("info", description="Log level.")


def _config(host: str, port: int) -> dict[str, Any]:
    # "external": the broker serves connections handed to it, on the socket bound beforehand
    return {
        "listeners": {"default": {"type": "external", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


@contextlib.asynccontextmanager
async def embedded_broker(
    *, host: str = "127.0.0.1", port: int = 1884, sock: socket.socket | None = None
) -> AsyncIterator[str]:
    """Run the broker for the duration of the block; yields its ``mqtt://`` URL. ``sock``: the
    listening socket if the caller bound it, else ``host:port`` is bound first
    (:class:`~common.lifecycle.CannotListen`)."""
    sock = sock or listen(host, port, who="MQTT broker")
    with contextlib.closing(sock):
        broker = Broker(_config(host, port))
        await broker.start()
        try:

            async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                try:
                    await broker.stream_connected(reader, writer, listener_name="default")
                except asyncio.CancelledError:
                    # a client still connecting when the process ends: on Python 3.11 a
                    # cancelled connection task is logged with a traceback by asyncio's streams
                    writer.close()

            server = await asyncio.start_server(connected, sock=sock)
            _log.info("embedded MQTT broker on %s:%d", host, port)
            try:
                yield f"mqtt://{host}:{port}"
            finally:
                server.close()
        finally:
            await broker.shutdown()


async def main(settings: BrokerSettings, shutdown: asyncio.Event) -> None:
    async with embedded_broker(host=settings.host, port=settings.port):
        await shutdown.wait()
