"""Supervised tasks: restart on failure with exponential backoff and jitter.

A supervised activity is a coroutine function that normally runs until cancelled. If it raises,
the failure is logged with its traceback, counted in ``beats_task_restarts{task=...}`` and the
activity is started again after a delay that doubles from ``min_backoff`` up to ``max_backoff``
(full jitter). A run that lasted longer than ``reset_after`` seconds resets the delay. If it
returns normally it is not restarted.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from common.metrics import Metrics

__all__ = ["Backoff", "bounded", "raise_if_cancelled", "supervise"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass
class Backoff:
    """Exponential backoff with full jitter: ``next()`` is a delay in seconds."""

    min_delay: float = 0.5
    max_delay: float = 30.0
    attempt: int = 0

    def next(self) -> float:
        ceiling = min(self.max_delay, self.min_delay * 2**self.attempt)
        self.attempt += 1
        return random.uniform(self.min_delay / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


def raise_if_cancelled() -> None:
    """Raise the cancellation that a library call may have dropped. Python 3.11's
    ``asyncio.wait_for`` returns the result when the cancellation arrives just as the awaited
    call completes (gh-86296, fixed in 3.12), and the task then runs on as if never cancelled:
    a shutdown waits for it for ever. Call it after such calls (aiomqtt's, aiokafka's through
    ``wait_for``) in code that runs until cancelled; not in cleanup that runs while cancelling."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def bounded(call: Awaitable[_T], timeout: float) -> _T:
    """``asyncio.wait_for(call, timeout)`` that does not drop a cancellation arriving as
    ``call`` completes (:func:`raise_if_cancelled`)."""
    result = await asyncio.wait_for(call, timeout)
    raise_if_cancelled()
    return result


async def supervise(
    name: str,
    activity: Callable[[], Awaitable[None]],
    *,
    metrics: Metrics,
    backoff: Backoff | None = None,
    reset_after: float = 60.0,
) -> None:
    backoff = backoff or Backoff()
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            await activity()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            if loop.time() - started > reset_after:
                backoff.reset()
            delay = backoff.next()
            metrics.restarts.labels(name).inc()
            _log.exception("task %s failed; restarting in %.1fs", name, delay)
            await asyncio.sleep(delay)
