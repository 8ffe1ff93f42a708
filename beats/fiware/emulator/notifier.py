"""Sending notifications: one ordered queue and worker per subscription, never blocking the
request that triggered them, never retrying (like Orion and Orion-LD).

Failure accounting differs between the two brokers and is emulated as each does it:

* Orion (v2, ``subCache.cpp`` and ``1126_GET_v2_subscriptions/lastsuccesscode_and_
  lastfailurereason.test``): only a transport error is a failure (``lastFailureReason`` is curl's
  text: ``Could not connect to server``, ``Timeout was reached``, ``Could not resolve
  hostname``); any HTTP answer, 5xx included, is a success recorded as ``lastSuccessCode``.
  ``failsCounter`` counts consecutive failures; the failure that makes it exceed
  ``maxFailsLimit`` switches the subscription to ``inactive``
  (``3541_subscription_max_fails_limit/http_maxfailslimit_full_lifecycle.test``).
* Orion-LD (``notificationFailure.cpp``, ``orionldAlterationsTreat.cpp``): a non-2xx answer is a
  failure too (``non 2xx response to notification``); three consecutive failures pause the
  subscription (``status: paused``, ``isActive: false``).

Each queue is bounded (``queue_size``); when it is full the notification is dropped and counted as
a failure (``notification queue is full``), as Orion does with its notification queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx

from beats.fiware.emulator.bodies import Outgoing
from beats.fiware.emulator.model import Subscription, now

__all__ = ["Notifier"]

_log = logging.getLogger(__name__)
_LD_PAUSE_AFTER = 3


@dataclass(frozen=True)
class _Job:
    sub: Subscription
    build: Callable[[], Outgoing]


def _reason(exc: httpx.HTTPError, *, ld: bool) -> str:
    if ld:
        return "Unable to connect to notification endpoint"
    if isinstance(exc, httpx.TimeoutException):
        return "Timeout was reached"
    text = str(exc).lower()
    if "name or service not known" in text or "nodename nor servname" in text:
        return "Could not resolve hostname"
    if isinstance(exc, httpx.ConnectError):
        return "Could not connect to server"
    return str(exc) or type(exc).__name__


class Notifier:
    """Per-subscription ordered delivery. Workers run in the task group given to :meth:`run`."""

    def __init__(self, *, timeout: float = 5.0, queue_size: int = 1000) -> None:
        self.timeout = timeout
        self.queue_size = queue_size
        self._queues: dict[str, asyncio.Queue[_Job]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._group: asyncio.TaskGroup | None = None
        self._client: httpx.AsyncClient | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Own the HTTP client and the workers' task group while the block runs."""
        async with httpx.AsyncClient(timeout=self.timeout) as client, asyncio.TaskGroup() as group:
            for name in list(client.headers):  # only the broker's headers ("" removes one)
                del client.headers[name]
            self._client, self._group = client, group
            try:
                yield
            finally:
                self.stop()
                self._group = None

    def enqueue(self, sub: Subscription, build: Callable[[], Outgoing]) -> None:
        """Queue one notification for ``sub``; ``build`` renders it when its turn comes."""
        if self._group is None:
            return  # not serving: nothing can be sent (as Orion while stopping)
        queue = self._queues.setdefault(sub.id, asyncio.Queue(self.queue_size))
        try:
            queue.put_nowait(_Job(sub, build))
        except asyncio.QueueFull:
            self._record(sub, failure="notification queue is full", code=None)
            return
        if sub.id not in self._workers:
            self._workers[sub.id] = self._group.create_task(
                self._work(sub.id, queue), name=f"orion-notify:{sub.id}"
            )

    def stop(self) -> None:
        """Cancel every worker and drop what is queued (a restart loses it)."""
        for task in self._workers.values():
            task.cancel()
        self._workers.clear()
        self._queues.clear()

    async def _work(self, sub_id: str, queue: asyncio.Queue[_Job]) -> None:
        while True:
            job = await queue.get()
            try:
                await self._send(job)
            except Exception:  # a bug here must not take the broker down
                _log.exception("orion emulator: notification for %s failed", sub_id)

    async def _send(self, job: _Job) -> None:
        assert self._client is not None
        outgoing, sub = job.build(), job.sub
        sub.times_sent += 1
        sub.last_notification = now()
        timeout = _timeout(sub) or self.timeout
        try:
            response = await self._client.request(
                outgoing.method,
                outgoing.url,
                params=outgoing.params or None,
                headers=outgoing.headers,
                content=outgoing.body,
                timeout=timeout,
            )
        except httpx.HTTPError as exc:
            self._record(sub, failure=_reason(exc, ld=sub.ld), code=None)
            return
        code = response.status_code
        failed = sub.ld and not 200 <= code < 300
        self._record(sub, failure="non 2xx response to notification" if failed else None, code=code)

    @staticmethod
    def _record(sub: Subscription, *, failure: str | None, code: int | None) -> None:
        if failure is None:
            sub.fails, sub.last_success, sub.last_success_code = 0, now(), code
            return
        sub.fails += 1
        sub.last_failure, sub.last_failure_reason = now(), failure
        limit = sub.body.get("notification", {}).get("maxFailsLimit")
        if sub.ld and sub.fails >= _LD_PAUSE_AFTER:
            sub.status = "paused"
        elif not sub.ld and isinstance(limit, int) and limit > 0 and sub.fails > limit:
            _log.warning(
                "Subscription %s automatically disabled due to failsCounter (%d) "
                "overpasses maxFailsLimit (%d)",
                sub.id,
                sub.fails,
                limit,
            )
            sub.status = "inactive"


def _timeout(sub: Subscription) -> float | None:
    """``http.timeout`` / ``httpCustom.timeout`` in milliseconds (0: the broker default)."""
    note = sub.body.get("notification", {})
    target = note.get("httpCustom") or note.get("http") or {}
    value = target.get("timeout")
    return value / 1000 if isinstance(value, int | float) and value > 0 else None
