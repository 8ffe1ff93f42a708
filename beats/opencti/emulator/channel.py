"""One SSE connection of the emulator, as OpenCTI's ``sseMiddleware.js`` runs one.

* ``connected`` first (no id): the stream info and a ``connectionId``.
* Entries after the start, read in batches of up to 100 (``XREAD COUNT 100``). The raw
  ``/stream`` sends them as stored (``scope: internal`` ones left out). A live stream
  (``/stream/{id}``) also: drops events older than version 4, inferred objects unless
  ``with-inferences``, deletions when ``listen-delete=false``; adds ``event_id``
  (``<updated_at ms>-<index in the batch>``, OpenCTI's ``streamEventId``); and first sends the
  objects an event refers to that this connection has not sent yet (markings, author,
  relationship ends, report contents) as ``create`` frames from ``dependencies`` *with the
  triggering event's id* — so several frames share one id. A relationship whose ends the
  platform does not hold is not sent (OpenCTI's "invalid resolution").
* ``recover`` (live streams, with a start): the current state of every object updated between
  the start and the recover date, as ``create`` frames from ``init`` with id
  ``<updated_at ms>-0`` (dependencies first), then the stream after the recover date.
* A ``heartbeat`` every ``heartbeat_interval`` seconds whatever the traffic, once a position is
  known: id = the last id read (after an idle poll ``<now>-0``), data = its time as a JSON
  string.
* The connection ends when its live stream is stopped or deleted, and after every
  ``drop_every`` data frames (a test switch, not OpenCTI's).

Malformed entries (data that is not a JSON object with a STIX object) are sent unchanged on
every stream, so consumers' dead-letter paths can be tested; OpenCTI never stores such data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from beats.opencti.emulator.core import DEFAULT_LIVE_STREAM, Entry, OpenctiEmulator, updated_at
from beats.opencti.frames import Frame, StreamId
from beats.opencti.normalize import lifted

__all__ = ["BATCH", "Channel", "StreamOptions"]

BATCH = 100


@dataclass(frozen=True)
class StreamOptions:
    """What one request asked for (``collection`` is ``None`` for the raw ``/stream``)."""

    collection: str | None
    start: StreamId | None
    recover: StreamId | None = None
    listen_delete: bool = True
    with_inferences: bool = False
    delay: float = 0.0
    heartbeat_interval: float = 5.0
    drop_every: int | None = None


def _json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"))


def _refs(stix: dict[str, Any]) -> list[str]:
    """Every ``*_ref`` / ``*_refs`` value of the object (OpenCTI's ``stixRefsExtractor``)."""
    found: list[str] = []
    for key, value in stix.items():
        if key.endswith("_ref") and isinstance(value, str):
            found.append(value)
        elif key.endswith("_refs") and isinstance(value, list):
            found.extend(v for v in value if isinstance(v, str))
    return found


def _create_message(stix: dict[str, Any]) -> str:
    entity_type = lifted(stix).get("entity_type", stix.get("type"))
    label = stix.get("name") or stix.get("value") or stix["id"]
    return f"creates a {entity_type} `{label}`"


class Channel:
    """The frames of one connection; iterate :meth:`frames`."""

    def __init__(self, emulator: OpenctiEmulator, options: StreamOptions) -> None:
        self.emulator = emulator
        self.store = emulator.store
        self.options = options
        self.live = options.collection is not None
        self.cursor = options.start if options.start is not None else self.store.last_id
        self.last_id = options.start
        self.sent: set[str] = set()
        self.count = 0
        self.next_beat = 0.0

    async def frames(self) -> AsyncIterator[bytes]:
        info = {**self.store.info(), "connectionId": str(uuid.uuid4())}
        yield Frame("connected", "", _json(info)).encode()
        self.next_beat = asyncio.get_running_loop().time() + self.options.heartbeat_interval
        recovering = self._recovering()
        if recovering is not None:
            for frame in self._recovered(recovering):
                yield frame.encode()
                if self._dropped():
                    return
            self.cursor = self.last_id = recovering
        while self._open():
            batch = self.store.after(self.cursor, BATCH)
            if batch:
                for frame in self._process(batch):
                    yield frame.encode()
                    if self._dropped():
                        return
                self.cursor = self.last_id = batch[-1].id
                if self.options.delay:
                    await asyncio.sleep(self.options.delay)
            else:
                await self._wait()
            beat = self._heartbeat()
            if beat is not None:
                yield beat.encode()

    def _recovering(self) -> StreamId | None:
        start, until = self.options.start, self.options.recover
        if self.live and start is not None and until is not None and until > start:
            return until
        return None

    def _open(self) -> bool:
        if self.options.collection is None:
            return True
        collection = self.emulator.collections.get(self.options.collection)
        if collection is None:
            return self.options.collection == DEFAULT_LIVE_STREAM
        return collection.started

    def _dropped(self) -> bool:
        self.count += 1
        every = self.options.drop_every
        return every is not None and every > 0 and self.count % every == 0

    async def _wait(self) -> None:
        timeout = self.next_beat - asyncio.get_running_loop().time()
        if timeout <= 0:
            return
        async with self.store.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.store.changed.wait(), timeout)

    def _heartbeat(self) -> Frame | None:
        now = asyncio.get_running_loop().time()
        if now < self.next_beat:
            return None
        self.next_beat = now + self.options.heartbeat_interval
        if not self.store.after(self.cursor, 1):
            self.last_id = self.store.idle_mark()
        if self.last_id is None:
            return None
        return Frame("heartbeat", str(self.last_id), json.dumps(self.last_id.iso()))

    def _process(self, batch: list[Entry]) -> Iterator[Frame]:
        visible = [e for e in batch if e.payload is None or e.payload.get("scope") != "internal"]
        for index, entry in enumerate(visible):
            stix = entry.payload.get("data") if entry.payload is not None else None
            if not self.live or entry.payload is None or not isinstance(stix, dict):
                yield Frame(entry.kind, str(entry.id), entry.data)
            elif self._visible(entry.kind, entry.payload, stix):
                yield from self._live(entry, entry.payload, stix, index)

    def _visible(self, kind: str, payload: dict[str, Any], stix: dict[str, Any]) -> bool:
        try:
            version = int(str(payload.get("version") or "0"))
        except ValueError:
            version = 0
        inferred = bool(lifted(stix).get("is_inferred"))
        deletion_hidden = kind == "delete" and not self.options.listen_delete
        return (
            version >= 4 and (self.options.with_inferences or not inferred) and not deletion_hidden
        )

    def _live(
        self, entry: Entry, payload: dict[str, Any], stix: dict[str, Any], index: int
    ) -> Iterator[Frame]:
        when = updated_at(stix)
        stamp = StreamId.at(when, index) if when is not None else self.store.idle_mark()
        event = {**payload, "event_id": payload.get("event_id") or str(stamp)}
        if entry.kind != "delete":
            dependencies = self._dependencies(stix, str(entry.id))
            if dependencies is None:
                return
            yield from dependencies
        self.sent.add(str(stix.get("id")))
        yield Frame(entry.kind, str(entry.id), _json(event))

    def _dependencies(self, stix: dict[str, Any], frame_id: str) -> list[Frame] | None:
        """The ``create`` frames of what ``stix`` refers to and this connection has not sent,
        referenced objects first; ``None`` when a relationship's ends are unknown."""
        objects = self.store.objects
        if stix.get("type") in ("relationship", "sighting"):
            ends = [stix.get("source_ref") or stix.get("sighting_of_ref")]
            ends.append(stix.get("target_ref") or (stix.get("where_sighted_refs") or [None])[0])
            if any(end not in objects and end not in self.sent for end in ends):
                return None
        frames: list[Frame] = []
        for ref in _refs(stix):
            if ref in self.sent or ref not in objects:
                continue
            self.sent.add(ref)
            frames.extend(self._dependencies(objects[ref], frame_id) or [])
            frames.append(self._created(objects[ref], frame_id, "dependencies"))
        return frames

    def _created(self, stix: dict[str, Any], frame_id: str, referer: str) -> Frame:
        content = {
            "data": stix,
            "message": _create_message(stix),
            "origin": {"referer": referer},
            "version": "4",
        }
        return Frame("create", frame_id, _json(content))

    def _recovered(self, until: StreamId) -> Iterator[Frame]:
        start = self.options.start or StreamId(0, 0)
        for stix in self.store.updated_between(start, until):
            if stix["id"] in self.sent:
                continue
            when = updated_at(stix)
            frame_id = str(StreamId.at(when)) if when is not None else str(until)
            yield from self._dependencies(stix, frame_id) or []
            self.sent.add(stix["id"])
            yield self._created(stix, frame_id, "init")
