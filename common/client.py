"""The Python client of a beat's (or the gateway's) SSE feed, in a few lines::

    from common.client import Gap, subscribe

    async for item in subscribe("http://127.0.0.1:8101/events", last_event_id=0):
        if isinstance(item, Gap):
            print("lost events:", item)        # retention dropped what we asked for
        else:
            print(item.sequence, item.type, item.data)   # a CloudEvent

``iter_events(...)`` is the same as a blocking iterator (scripts, notebooks, threads).

Contract:

* Items are :class:`~common.envelope.CloudEvent` objects, in sequence order, or :class:`Gap`.
* **Reconnect** forever (until the caller stops iterating) with exponential backoff and jitter
  after a network error, a 5xx/429, or a stream the server ended (shutdown, or the beat dropped
  a slow subscriber with a ``retry:`` hint, which is honoured as the minimum delay).
* **Resume** with ``Last-Event-ID`` = the last sequence received, so a reconnect (also to a
  restarted beat) has no gap and no duplicate. ``last_event_id`` is the first position:
  ``None`` live from now, ``0`` everything the log keeps, ``N`` after N. On the gateway's
  merged ``/streams`` the ids are position vectors (``hivemq=12;ditto=7``), kept and sent back
  as they are.
* **Gaps are never silent**: when the beat no longer holds what was asked for (``beats.gap``),
  a :class:`Gap` is yielded before the events that follow. The resume position is unchanged by
  it (the next event carries the position).
* 400, 401, 403, 404 and 410 are not retried: :class:`FeedError` is raised (a wrong URL or
  token does not fix itself). A frame that is not a valid CloudEvent raises pydantic's
  ``ValidationError`` (reconnecting would only read it again).
* ``token`` is sent as ``Authorization: Bearer <token>`` (the gateway's tokens).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO
from urllib.parse import urlsplit

import httpx
from httpx_sse import ServerSentEvent, SSEError, aconnect_sse, connect_sse
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import CliPositionalArg

from common.envelope import CloudEvent
from common.lifecycle import Fatal
from common.settings import CommandSettings, LogLevel, secret_file
from common.supervise import Backoff

__all__ = [
    "FeedError",
    "Gap",
    "TailSettings",
    "check_feed_url",
    "format_item",
    "iter_events",
    "main",
    "subscribe",
]

_log = logging.getLogger(__name__)
GAP_EVENT = "beats.gap"
_FATAL = frozenset({400, 401, 403, 404, 410})


class FeedError(Exception):
    """The server refused the subscription in a way retrying cannot fix."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


class _Retry(Exception):
    """A response worth retrying (5xx, 429, not an event stream)."""


@dataclass(frozen=True)
class Gap:
    """Events after ``requested`` are not (or no longer) in the log; the stream resumed after
    ``resumed_after``. ``reason``: ``expired`` (retention) or ``ahead-of-log`` (log reset)."""

    requested: int
    resumed_after: int
    reason: str


Item = CloudEvent | Gap


class _Cursor:
    """What both loops share: the resume position, the server's retry hint, frame decoding."""

    def __init__(self, url: str, token: str | None, last_event_id: int | str | None) -> None:
        self.last: int | str | None = last_event_id
        self.retry_hint = 0.0
        self.token = token
        parts = urlsplit(url).path.rstrip("/").split("/")
        self.channel = parts[-1] if len(parts) >= 2 and parts[-2] == "events" else "default"

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last is not None:
            headers["Last-Event-ID"] = str(self.last)
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    @staticmethod
    def check(response: httpx.Response) -> None:
        if response.status_code in _FATAL:
            raise FeedError(response.status_code, response.text)
        if response.status_code != 200:
            raise _Retry(f"HTTP {response.status_code}")

    def decode(self, sse: ServerSentEvent) -> Item | None:
        if sse.retry is not None:
            self.retry_hint = sse.retry / 1000
        if sse.event == GAP_EVENT:
            gap = json.loads(sse.data)
            return Gap(int(gap["requested"]), int(gap["resumed_after"]), str(gap["reason"]))
        if not sse.data:
            return None
        if sse.id.isdigit():
            sequence = int(sse.id)
            if isinstance(self.last, int) and sequence <= self.last:
                return None  # defensive: never hand out a sequence twice
            self.last = sequence
        elif sse.id:
            self.last = sse.id  # the gateway's merged stream: a position vector, kept opaque
        return CloudEvent.from_json(sse.data, channel=self.channel)

    def delay(self, backoff: Backoff) -> float:
        return max(self.retry_hint, backoff.next())


def _timeout(read_timeout: float) -> httpx.Timeout:
    return httpx.Timeout(10.0, read=read_timeout)


_RECOVERABLE = (httpx.TransportError, SSEError, _Retry)


def check_feed_url(url: str) -> str:
    """``url`` if it is an ``http(s)://host/...`` URL, else ``ValueError`` saying what is wanted
    (retrying a URL httpx cannot use would only fail for ever)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{url!r} is not an http:// or https:// URL with a host "
            "(e.g. http://127.0.0.1:8101/events)"
        )
    return url


def _os_reason(exc: BaseException) -> str | None:
    """The innermost OS error under ``exc``: ``Connection refused``, ``Name or service not known``
    (httpx's async client only says "All connection attempts failed")."""
    found = None
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and isinstance(cause.errno, int):
            found = (
                cause.strerror if isinstance(cause, socket.gaierror) else os.strerror(cause.errno)
            )
        cause = cause.__cause__ or cause.__context__
    return found


def _retrying(url: str, exc: Exception | None, cursor: _Cursor, backoff: Backoff) -> float:
    """Log why the feed is read again and when; the delay before the next attempt."""
    delay = cursor.delay(backoff)
    if exc is None:
        _log.info("feed %s: the stream ended; reconnecting in %.1f s", url, delay)
        return delay
    if isinstance(exc, httpx.ConnectError):
        reason = f"cannot connect ({_os_reason(exc) or exc or 'no reason given'})"
    else:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    _log.warning(
        "feed %s: %s; retrying in %.1f s (retries go on, at most %g s apart)",
        url,
        reason,
        delay,
        max(cursor.retry_hint, backoff.max_delay),
    )
    return delay


async def subscribe(
    url: str,
    *,
    token: str | None = None,
    last_event_id: int | str | None = None,
    backoff: Backoff | None = None,
    read_timeout: float = 60.0,
    client: httpx.AsyncClient | None = None,
) -> AsyncGenerator[Item, None]:
    """Events (and gaps) of ``url`` forever, reconnecting and resuming (see the module doc).

    ``read_timeout``: seconds without a byte before the connection counts as dead (beats send
    a heartbeat at least every 15 s)."""
    check_feed_url(url)
    cursor = _Cursor(url, token, last_event_id)
    backoff = backoff or Backoff(min_delay=0.2, max_delay=10.0)
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = httpx.AsyncClient(timeout=_timeout(read_timeout))
            await stack.enter_async_context(client)
        while True:
            try:
                async with aconnect_sse(client, "GET", url, headers=cursor.headers()) as source:
                    if source.response.status_code != 200:
                        await source.response.aread()
                    cursor.check(source.response)
                    # closed in order when the caller leaves its loop (else the event loop
                    # finalises both generators at once: "aclose(): ... already running")
                    async with contextlib.aclosing(source.aiter_sse()) as frames:
                        async for sse in frames:
                            item = cursor.decode(sse)
                            if item is not None:
                                backoff.reset()
                                yield item
            except _RECOVERABLE as exc:
                await asyncio.sleep(_retrying(url, exc, cursor, backoff))
            else:
                await asyncio.sleep(_retrying(url, None, cursor, backoff))


def iter_events(
    url: str,
    *,
    token: str | None = None,
    last_event_id: int | str | None = None,
    backoff: Backoff | None = None,
    read_timeout: float = 60.0,
    client: httpx.Client | None = None,
) -> Iterator[Item]:
    """The blocking twin of :func:`subscribe` (same items, same reconnect and resume)."""
    check_feed_url(url)
    cursor = _Cursor(url, token, last_event_id)
    backoff = backoff or Backoff(min_delay=0.2, max_delay=10.0)
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(httpx.Client(timeout=_timeout(read_timeout)))
        while True:
            try:
                with connect_sse(client, "GET", url, headers=cursor.headers()) as source:
                    if source.response.status_code != 200:
                        source.response.read()
                    cursor.check(source.response)
                    for sse in source.iter_sse():
                        item = cursor.decode(sse)
                        if item is not None:
                            backoff.reset()
                            yield item
            except _RECOVERABLE as exc:
                time.sleep(_retrying(url, exc, cursor, backoff))
            else:
                time.sleep(_retrying(url, None, cursor, backoff))


subscribe_blocking = iter_events


class TailSettings(CommandSettings):
    """Print a live feed of a beat or the gateway: beats tail URL."""

    url: CliPositionalArg[str] = Field(
        description="SSE feed, e.g. http://127.0.0.1:8101/events or .../events/<channel>. "
        "While it cannot be read, beats tail logs why and retries (at most 10 s apart)."
    )
    token: SecretStr | None = Field(None, description="Bearer token (the gateway's).")
    token_file: Path | None = secret_file("token")
    last_event_id: int | None = Field(
        None, description="Start after this sequence (0: everything kept; unset: live only)."
    )
    output: Literal["pretty", "json"] = Field(
        "pretty", description="pretty: one line per event; json: the CloudEvent as JSON lines."
    )
    width: int = Field(160, ge=40, description="Pretty lines are cut to this many characters.")
    log_level: LogLevel = Field("warning", description="Log level.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        return check_feed_url(url)


def format_item(item: Item, *, output: str = "pretty", width: int = 160) -> str:
    """One line for ``beats tail``."""
    if isinstance(item, Gap):
        return (
            f"-- gap: events after {item.requested} are gone ({item.reason}); "
            f"resumed after {item.resumed_after}"
        )
    if output == "json":
        return item.to_json().decode()
    payload = item.data if item.data_base64 is None else f"<{len(item.data_base64)} b64 chars>"
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str)
    when = item.time.isoformat(timespec="milliseconds") if item.time else "-"
    line = f"#{item.sequence} {when} {item.type} {item.subject or '-'} {data}"
    return line if len(line) <= width else line[: width - 1] + "…"


async def main(settings: TailSettings, shutdown: asyncio.Event, out: TextIO | None = None) -> None:
    """``beats tail URL``: print the feed until ``shutdown`` (Ctrl-C)."""
    stream = out or sys.stdout
    token = settings.token.get_secret_value() if settings.token else None

    async def follow() -> None:
        items = subscribe(settings.url, token=token, last_event_id=settings.last_event_id)
        async for item in items:
            print(format_item(item, output=settings.output, width=settings.width), file=stream)
            stream.flush()

    task = asyncio.create_task(follow(), name="tail")
    stopper = asyncio.create_task(shutdown.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for pending in (task, stopper):
        pending.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except FeedError as exc:  # one line and exit code 1, not a traceback
        reason = " ".join(str(exc).split())
        raise Fatal(f"beats tail {settings.url}: {reason} (not retried)") from None
