"""The server of the bare-stack baselines (``bench/bare_fiware.py``, ``bench/bare_broadcast.py``).

The same uvicorn configuration as a beat's (:func:`common.http.server_config`: uvicorn with the
h11-based :class:`common.http.DeadlineProtocol`, default service settings, lifespan off), on a
socket bound the way a beat binds it, on the same event loop as the services
(:func:`beats.cli.event_loop_factory`); no application code of the project beyond that.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Coroutine
from typing import Any

from beats.cli import event_loop_factory
from common.http import UvicornServer, serve_http, server_config
from common.lifecycle import listen
from common.settings import ServiceSettings

__all__ = ["arguments", "run", "serve"]


def _nothing(*args: Any) -> None:
    pass


def arguments(description: str) -> argparse.ArgumentParser:
    """A parser with the ``--port`` every bare baseline takes (``tests.processes`` adds it)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True, help="HTTP port")
    return parser


async def serve(app: Any, *, port: int) -> None:
    """Serve ``app`` on 127.0.0.1:``port`` until the process is killed."""
    settings = ServiceSettings(port=port, log_level="warning")
    config = server_config(app, settings, on_head_timeout=_nothing, on_rejected=_nothing)
    await serve_http(UvicornServer(config), listen(settings.host, port, who="bare baseline"))


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on the event loop the services run on."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(main)
