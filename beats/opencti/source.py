"""The OpenCTI live-stream source: resumable, acknowledged by checkpoint after commit.

Resume position: OpenCTI resumes *after* the id a client sends in ``Last-Event-ID``, and several
frames can share one id (dependency resolution). So the saved position is the last id whose
frames are all committed: it advances when a frame with a new id arrives, and to a heartbeat's
id (the server's "everything up to here was read"). It is written in the same transaction as the
events (``cursor=`` on commit): after a crash or a dropped connection the beat asks again from
there; frames it had already committed come back with the same CloudEvent ids and the log
skips them as duplicates. No gap, no duplicate.

Failures: nothing for ``opencti_read_timeout`` seconds (the server heartbeats every 5 s), a
dropped connection or a 5xx → reconnect with jittered backoff. 401/403 (token), 404 (unknown
stream) and 410 (stream stopped) are not retried blindly: ``/readyz`` says what is wrong and
retries slow down to once every few minutes. When OpenCTI's retention has trimmed the stream past
the saved position (the ``connected`` frame's ``firstEventId`` is later), what was trimmed cannot
be had: the beat logs it and counts ``beats_source_errors{kind="trimmed"}``, then goes on.

Markings: every event carries ``tlp`` (:mod:`beats.opencti.normalize`), which needs the
definitions of the markings it names. They are read from the log at start, loaded from the
platform (:mod:`beats.opencti.markings`) and learned from the stream: a ``marking-definition``
frame's level is saved before its event is queued for commit, so everything committed after it
is judged with it, also after a restart. A frame that cannot be read is dead-lettered with
``tlp: red`` (its content, and so its markings, are unknown).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
from httpx_sse import aconnect_sse

from beats.opencti.frames import Frame, trimmed_past
from beats.opencti.markings import (
    STATE,
    MarkingsFailing,
    MarkingsUnavailable,
    fetch_platform_markings,
)
from beats.opencti.normalize import normalize
from beats.opencti.reader import read_frames
from beats.opencti.settings import OpenctiSettings
from beats.opencti.stix import marking_level
from common.envelope import CloudEvent
from common.eventlog import StoredEvent
from common.inflight import InFlight
from common.pipeline import Pipeline
from common.supervise import Backoff

__all__ = ["CURSOR", "OpenctiSource", "StreamRefused"]

CURSOR = "opencti"
_log = logging.getLogger(__name__)
_MAX_PENDING = 1000
_REFUSED = {
    401: "unauthorized: check --opencti-token",
    403: "forbidden for this token",
    404: "no such stream",
    410: "the live stream is stopped",
}

_Commit = asyncio.Future[list[StoredEvent | None]]


class StreamRefused(Exception):
    """OpenCTI answered with a status that retrying soon will not change."""


class OpenctiSource:
    def __init__(self, settings: OpenctiSettings) -> None:
        self.settings = settings
        self.url = settings.stream_url()
        self.channels = settings.channel_overrides()
        self.markings: dict[str, str] = {}
        self._failed = asyncio.Event()

    async def run(self, pipeline: Pipeline) -> None:
        self.markings.update(await pipeline.log.load_state(STATE))
        retry = self.settings.opencti_load_markings and not await self._load_markings(pipeline)
        async with asyncio.TaskGroup() as tasks:
            if retry:
                tasks.create_task(self._retry_markings(pipeline), name="opencti:markings")
            tasks.create_task(self._stream(pipeline), name="opencti:stream")

    async def _load_markings(self, pipeline: Pipeline) -> bool:
        """One attempt to load the platform's markings; False when it may succeed later."""
        pipeline.set_ready("markings", False, "loading the platform's marking definitions")
        url = self.settings.graphql_url()
        token = self.settings.opencti_token
        try:
            async with httpx.AsyncClient(timeout=10.0) as http:
                loaded = await fetch_platform_markings(
                    http, url, token.get_secret_value() if token else None
                )
        except MarkingsUnavailable as exc:
            detail = f"not loaded from {url}: {exc}; markings seen on the stream are used"
            _log.warning("opencti markings %s", detail)
            pipeline.set_ready("markings", True, detail + " (unknown ones count as red)")
            return True
        except MarkingsFailing as exc:
            pipeline.set_ready("markings", False, f"loading from {url} failed: {exc}; retrying")
            _log.warning("opencti markings: loading from %s failed: %s", url, exc)
            return False
        await pipeline.log.save_state(STATE, loaded)
        self.markings.update(loaded)
        pipeline.set_ready("markings", True, f"{len(loaded)} marking ids loaded from {url}")
        return True

    async def _retry_markings(self, pipeline: Pipeline) -> None:
        backoff = Backoff(min_delay=2.0, max_delay=60.0)
        while True:
            await asyncio.sleep(backoff.next())
            if await self._load_markings(pipeline):
                return

    async def _stream(self, pipeline: Pipeline) -> None:
        backoff = Backoff(min_delay=0.5, max_delay=30.0)
        refused = Backoff(min_delay=30.0, max_delay=300.0)
        pipeline.set_ready("opencti", False, "connecting")
        while True:
            try:
                await self._session(pipeline, backoff)
                detail, delay = "the server closed the stream", backoff.next()
            except StreamRefused as exc:
                detail, delay = str(exc), refused.next()
            except (httpx.HTTPError, TimeoutError, ConnectionError) as exc:
                detail, delay = f"{type(exc).__name__}: {exc}", backoff.next()
            pipeline.metrics.source_connected.set(0)
            pipeline.metrics.reconnects.inc()
            pipeline.set_ready("opencti", False, detail)
            _log.warning("opencti %s: %s; reconnecting in %.1fs", self.url, detail, delay)
            await asyncio.sleep(delay)

    async def _session(self, pipeline: Pipeline, backoff: Backoff) -> None:
        self._failed = asyncio.Event()
        headers = {"Accept": "text/event-stream"}
        if self.settings.opencti_token is not None:
            headers["Authorization"] = f"Bearer {self.settings.opencti_token.get_secret_value()}"
        params = {}
        resume = await pipeline.log.get_cursor(CURSOR)
        if resume:
            headers["Last-Event-ID"] = resume
        elif self.settings.opencti_start:
            params["from"] = self.settings.opencti_start
            if self.settings.opencti_recover and self.settings.stream_id:
                params["recover"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        timeout = httpx.Timeout(10.0, read=self.settings.opencti_read_timeout)
        async with (
            httpx.AsyncClient(timeout=timeout) as client,
            aconnect_sse(client, "GET", self.url, headers=headers, params=params) as source,
        ):
            status = source.response.status_code
            if status in _REFUSED:
                raise StreamRefused(f"HTTP {status}: {_REFUSED[status]}")
            source.response.raise_for_status()
            frames = read_frames(source.response, max_line=self.settings.opencti_max_frame_bytes)
            await self._consume(frames, pipeline, backoff, resume)

    async def _consume(
        self,
        frames: AsyncIterator[Frame],
        pipeline: Pipeline,
        backoff: Backoff,
        resume: str | None,
    ) -> None:
        pending = InFlight(max_commits=_MAX_PENDING)
        current = resume
        async for frame in frames:
            if frame.kind == "connected":
                _warn_if_trimmed(frame, resume, pipeline)
                backoff.reset()
                pipeline.metrics.source_connected.set(1)
                pipeline.set_ready("opencti", True, f"streaming {self.url}")
                continue
            cursor = None
            if frame.kind == "heartbeat" or (frame.id and current and frame.id != current):
                cursor = frame.id if frame.kind == "heartbeat" else current
            if frame.id:
                current = frame.id
            events = self._normalize(frame, pipeline)
            await self._learn_markings(events, pipeline)
            await pending.add(self._submit(events, pipeline, cursor), len(frame.data))
            if self._failed.is_set():
                raise ConnectionError("a commit failed; resuming from the last saved position")

    def _normalize(self, frame: Frame, pipeline: Pipeline) -> list[CloudEvent]:
        """The frame's events, or its dead letter (red, as every dead letter of this beat:
        :func:`beats.opencti.service.build`)."""
        if frame.kind != "heartbeat":
            pipeline.received()
        return pipeline.guarded(
            lambda: normalize(
                frame,
                source=self.url,
                channels=self.channels,
                markings=self.markings,
                received_at=datetime.now(UTC),
            ),
            raw=frame.data,
            source=self.url,
            context={"kind": frame.kind, "stream_id": frame.id},
            whole=(frame.oversize, frame.digest) if frame.oversize else None,
        )

    async def _learn_markings(self, events: list[CloudEvent], pipeline: Pipeline) -> None:
        """Save the levels of marking definitions the events describe (before they are
        committed: a restart must know every marking its committed events named)."""
        learned: dict[str, str] = {}
        for event in events:
            stix = event.data.get("stix") if isinstance(event.data, dict) else None
            if isinstance(stix, dict) and stix.get("type") == "marking-definition":
                level = marking_level(stix)
                if self.markings.get(str(stix["id"])) != level:
                    learned[str(stix["id"])] = level
        if learned:
            await pipeline.log.save_state(STATE, learned)
            self.markings.update(learned)

    def _submit(self, events: list[CloudEvent], pipeline: Pipeline, cursor: str | None) -> _Commit:
        future = pipeline.submit(events, cursor=(CURSOR, cursor) if cursor else None)
        future.add_done_callback(self._check)
        return future

    def _check(self, future: _Commit) -> None:
        if future.cancelled() or future.exception() is not None:
            self._failed.set()


def _warn_if_trimmed(connected: Frame, resume: str | None, pipeline: Pipeline) -> None:
    """Retention has dropped the resume position: the gap cannot be refilled from the stream,
    so it is logged and counted (``source_errors{kind="trimmed"}``), not silent."""
    first = trimmed_past(connected.data, resume)
    if first is not None:
        pipeline.metrics.source_errors.labels("trimmed").inc()
        _log.warning(
            "opencti stream starts at %s, after the resume position %s: events in between "
            "may have been trimmed by the platform's retention (redis:trimming)",
            first,
            resume,
        )
