"""Logging set-up: plain text for people, one JSON object per line on request.

Secrets never reach the logs: settings hold them as ``SecretStr`` and URLs are logged through
:func:`redact_url`.
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

from pythonjsonlogger.json import JsonFormatter

__all__ = ["configure_logging", "redact_url"]


def _json_formatter() -> logging.Formatter:
    """One JSON object per line (python-json-logger): ``time``, ``level``, ``logger``,
    ``message``, and ``exception`` with the traceback when there is one."""
    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        timestamp="time",
        rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception"},
    )


def _log_uncaught(
    kind: type[BaseException], error: BaseException, tb: TracebackType | None
) -> None:
    logging.getLogger("beats").critical("uncaught exception", exc_info=(kind, error, tb))


def configure_logging(level: str = "info", *, json_format: bool = False) -> None:
    """Every record goes through one handler on stderr: the services' own, uvicorn's (its
    servers are configured with ``log_config=None``, so its loggers propagate here) and
    Python's warnings; with ``json_format`` also an uncaught exception's traceback."""
    handler = logging.StreamHandler(sys.stderr)
    if json_format:
        handler.setFormatter(_json_formatter())
        sys.excepthook = _log_uncaught
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    for noisy in ("aiokafka", "amqtt", "transitions", "websockets", "httpx"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))


def redact_url(url: str) -> str:
    """The URL without its password (``mqtt://user:***@host:1883``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
