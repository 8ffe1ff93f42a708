"""Commits a source has submitted and not yet seen complete, bounded in count and in bytes.

A streaming source (MQTT, the OpenCTI stream, Ditto's WebSocket) submits each batch to the log
without awaiting it, so that it can read on while the group commit runs, and acknowledges from
the commit's done-callback. :class:`InFlight` keeps those commits and makes the source wait for
the oldest one while ``max_commits`` of them, or ``max_bytes`` of their input, are outstanding:
backpressure towards the upstream (which keeps what is not acknowledged), never a drop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from common.eventlog import StoredEvent

__all__ = ["InFlight"]

_Commit = asyncio.Future[list[StoredEvent | None]]


class InFlight:
    def __init__(self, *, max_commits: int = 1000, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_commits = max_commits
        self.max_bytes = max_bytes
        self.bytes = 0
        self._pending: deque[tuple[_Commit, int]] = deque()

    def __len__(self) -> int:
        return len(self._pending)

    async def add(self, commit: _Commit, size: int) -> None:
        """Keep ``commit`` (``size``: bytes of input it holds); return once there is room.
        A failed commit is the source's to notice (its done-callback); here it only frees room."""
        self._pending.append((commit, size))
        self.bytes += size
        self._forget_done()
        while self._pending and (
            len(self._pending) >= self.max_commits or self.bytes >= self.max_bytes
        ):
            with contextlib.suppress(Exception):
                await self._pending[0][0]
            self._forget_done()

    def _forget_done(self) -> None:
        while self._pending and self._pending[0][0].done():
            _, size = self._pending.popleft()
            self.bytes -= size
