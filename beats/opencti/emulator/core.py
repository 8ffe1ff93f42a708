"""The emulator's state: the Redis stream, the platform's objects, the live-stream collections,
and the Python API tests and the demo use to drive it (:class:`OpenctiEmulator`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from beats.opencti.frames import BEGINNING, StreamId
from beats.opencti.scenario import PLATFORM_OBJECTS
from beats.opencti.stix import OCTI_EXTENSION

__all__ = ["DEFAULT_LIVE_STREAM", "Collection", "Entry", "OpenctiEmulator", "StreamStore"]

DEFAULT_LIVE_STREAM = "live"
"""OpenCTI's built-in live stream (no filters; bypass users only)."""


@dataclass(frozen=True)
class Entry:
    """One stream entry: its id, its SSE event name, its ``data:`` text, and that text parsed
    (``None`` when it is not a JSON object: the emulator can hold malformed entries)."""

    id: StreamId
    kind: str
    data: str
    payload: dict[str, Any] | None


@dataclass
class Collection:
    """A live stream created in OpenCTI's UI (Data sharing): started or stopped, public or not.
    The emulator does not apply filters: every collection sees every event."""

    id: str
    started: bool = True
    public: bool = False


def _parse(data: str) -> dict[str, Any] | None:
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None


def _stix(payload: dict[str, Any] | None) -> dict[str, Any] | None:
    stix = payload.get("data") if payload is not None else None
    return stix if isinstance(stix, dict) and isinstance(stix.get("id"), str) else None


def updated_at(stix: dict[str, Any]) -> datetime | None:
    """The object's ``updated_at`` (OpenCTI extension), else ``modified``."""
    extensions = stix.get("extensions")
    extension = extensions.get(OCTI_EXTENSION) if isinstance(extensions, dict) else None
    stamp = (extension.get("updated_at") if isinstance(extension, dict) else None) or stix.get(
        "modified"
    )
    if not isinstance(stamp, str):
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return None


class StreamStore:
    """The Redis stream (entries with monotonic ids) and the platform's current objects.

    ``changed`` is notified on every append and on collection changes, so readers wake up.
    ``trimming`` keeps at most that many entries, dropping the oldest on append, as OpenCTI's
    ``redis:trimming`` (``XADD MAXLEN``) does; 0 keeps them all. A reader resuming before the
    first kept entry gets what is left, as from Redis: the ``connected`` frame's
    ``firstEventId`` is how a consumer can tell.
    """

    def __init__(self, *, trimming: int = 0) -> None:
        self.trimming = trimming
        self.entries: list[Entry] = []
        self.objects: dict[str, dict[str, Any]] = {s["id"]: s for s in PLATFORM_OBJECTS}
        self.changed = asyncio.Condition()
        self._last = BEGINNING

    def _next_id(self) -> StreamId:
        """``XADD *``: now in ms, or the next sequence when that ms is already used."""
        millis = int(time.time() * 1000)
        if millis > self._last.millis:
            self._last = StreamId(millis, 0)
        else:
            self._last = StreamId(self._last.millis, self._last.seq + 1)
        return self._last

    def idle_mark(self) -> StreamId:
        """What OpenCTI reports as "read up to" after an idle poll: ``<now>-0``. Later ids are
        made greater, so a consumer resuming after this mark misses nothing."""
        millis = int(time.time() * 1000)
        if millis > self._last.millis:
            self._last = StreamId(millis, 0)
        return self._last

    async def append(
        self, frames: Iterable[tuple[str, str]], *, shared_id: bool = False
    ) -> list[StreamId]:
        """Append ``(kind, data)`` entries; with ``shared_id`` they all get one id."""
        ids: list[StreamId] = []
        async with self.changed:
            for index, (kind, data) in enumerate(frames):
                entry_id = ids[0] if shared_id and index else self._next_id()
                payload = _parse(data)
                self.entries.append(Entry(entry_id, kind, data, payload))
                self._track(kind, payload)
                ids.append(entry_id)
            if self.trimming and len(self.entries) > self.trimming:
                del self.entries[: len(self.entries) - self.trimming]
            self.changed.notify_all()
        return ids

    def _track(self, kind: str, payload: dict[str, Any] | None) -> None:
        stix = _stix(payload)
        if stix is None:
            return
        if kind == "delete":
            self.objects.pop(stix["id"], None)
        else:
            self.objects[stix["id"]] = stix
        context = payload.get("context") if payload is not None else None
        sources = context.get("sources") if isinstance(context, dict) else None
        if kind == "merge" and isinstance(sources, list):
            for source in sources:
                if isinstance(source, dict):
                    self.objects.pop(str(source.get("id")), None)

    def after(self, cursor: StreamId, limit: int) -> list[Entry]:
        """Up to ``limit`` entries after ``cursor`` (``XREAD COUNT limit ... cursor``)."""
        found: list[Entry] = []
        for entry in reversed(self.entries):
            if entry.id <= cursor:
                break
            found.append(entry)
        return found[::-1][:limit]

    @property
    def last_id(self) -> StreamId:
        return self.entries[-1].id if self.entries else BEGINNING

    def info(self) -> dict[str, Any]:
        """``XINFO STREAM`` as OpenCTI reports it in the ``connected`` frame."""
        first = self.entries[0].id if self.entries else BEGINNING
        last = self.last_id
        return {
            "lastEventId": str(last),
            "firstEventId": str(first),
            "firstEventDate": first.iso(),
            "lastEventDate": last.iso(),
            "streamSize": len(self.entries),
        }

    def updated_between(self, start: StreamId, until: StreamId) -> list[dict[str, Any]]:
        """Current objects whose update time is in ``(start, until]`` (recover mode)."""
        chosen = []
        for stix in self.objects.values():
            when = updated_at(stix)
            if when is not None and start.millis < StreamId.at(when).millis <= until.millis:
                chosen.append(stix)
        return sorted(chosen, key=lambda s: updated_at(s) or datetime.min.replace(tzinfo=UTC))


@dataclass
class OpenctiEmulator:
    """The emulator's state and its Python API (``app.state.opencti``)."""

    token: str
    store: StreamStore = field(default_factory=StreamStore)
    collections: dict[str, Collection] = field(default_factory=dict)

    async def append(self, event: dict[str, Any], *, kind: str | None = None) -> StreamId:
        """Append one event (the ``data:`` JSON); its SSE name is ``kind`` or its ``type``."""
        (entry_id,) = await self.append_many([event], kinds=[kind])
        return entry_id

    async def append_many(
        self,
        events: list[dict[str, Any]],
        *,
        kinds: list[str | None] | None = None,
        shared_id: bool = False,
    ) -> list[StreamId]:
        names = kinds or [None] * len(events)
        frames = [
            (name or str(event.get("type", "create")), json.dumps(event, separators=(",", ":")))
            for name, event in zip(names, events, strict=True)
        ]
        return await self.store.append(frames, shared_id=shared_id)

    async def append_raw(self, kind: str, data: str | bytes) -> StreamId:
        """Append an entry whose data is sent as is (malformed frames for tests), bytes too
        (not UTF-8 ones included); it must be one line, as every ``data:`` OpenCTI writes."""
        if isinstance(data, bytes):
            data = data.decode("utf-8", "surrogateescape")
        if "\n" in data or "\r" in data:
            raise ValueError("frame data is one line")
        (entry_id,) = await self.store.append([(kind, data)])
        return entry_id

    def markings(self) -> list[dict[str, Any]]:
        """The platform's marking definitions (what ``markingDefinitions`` lists)."""
        objects = self.store.objects.values()
        return [stix for stix in objects if stix.get("type") == "marking-definition"]

    @staticmethod
    def check_marking(stix: dict[str, Any]) -> None:
        """``ValueError`` unless ``stix`` is a marking definition :meth:`add_marking` takes."""
        if stix.get("type") != "marking-definition" or not isinstance(stix.get("id"), str):
            raise ValueError("a marking definition is a STIX marking-definition with an id")

    def add_marking(self, stix: dict[str, Any]) -> None:
        """A marking definition the platform holds without it being on the stream."""
        self.check_marking(stix)
        self.store.objects[stix["id"]] = stix

    async def create_stream(self, stream_id: str, *, public: bool = False) -> Collection:
        collection = Collection(stream_id, started=True, public=public)
        self.collections[stream_id] = collection
        await self._wake()
        return collection

    async def set_started(self, stream_id: str, started: bool) -> Collection:
        """Start or stop a collection (created if unknown); stopping ends its connections."""
        collection = self.collections.setdefault(stream_id, Collection(stream_id))
        collection.started = started
        await self._wake()
        return collection

    async def delete_stream(self, stream_id: str) -> None:
        self.collections.pop(stream_id, None)
        await self._wake()

    async def _wake(self) -> None:
        async with self.store.changed:
            self.store.changed.notify_all()
