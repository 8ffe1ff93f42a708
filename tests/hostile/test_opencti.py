"""The OpenCTI beat, as a process, reading the OpenCTI emulator's stream (``GET /stream``, the
raw stream, which sends every entry as stored): every hostile frame data of the corpus, each
value of the corpus as a STIX object's ``description``, the normal frame with each member at
every level mistyped, an unknown event kind, a 16 MiB frame (the beat has no frame size limit)
and a very long STIX id, each after a normal frame. After a kill -9, the redelivered frames are
appended while the beat is down and read on restart from its saved position.

SSE carries text, one line per ``data:``: frames cannot hold CR or LF (so the corpus's
whitespace document is left out), and bytes that are not UTF-8 reach the beat as U+FFFD, as the
SSE specification decodes them; such an input's bytes are taken as the beat receives them.

Losslessly committed means one event whose ``data`` gives back every member of the frame's
JSON (``type`` as ``recorded_kind``, ``data`` as ``stix``; ``version``, ``scope``, ``message``,
``origin``, ``context``, ``event_id`` as themselves) as strict JSON with the same types.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from beats.opencti.emulator import OpenctiEmulator, create_app
from beats.opencti.scenario import stream_event
from tests.hostile.contract import Contract, same_json
from tests.hostile.corpus import (
    CORPUS,
    NOT_JSON,
    Corpus,
    Sample,
    embed,
    strict_error,
    wrong_types,
)
from tests.hostile.support import Input, Report, interleave, run_scenario
from tests.support import serve_app

TOKEN = "hostile-suite-token"
HUGE = 16 * 1024 * 1024
_KEPT_AS = {
    "type": "recorded_kind",
    "data": "stix",
    "version": "version",
    "scope": "scope",
    "message": "message",
    "origin": "origin",
    "context": "context",
    "event_id": "event_id",
}


def frame(stix_id: str, description: Any = "a normal indicator") -> dict[str, Any]:
    """A ``create`` frame's data, as OpenCTI stores it."""
    stix = {
        "type": "indicator",
        "spec_version": "2.1",
        "id": stix_id,
        "created": "2024-05-01T10:00:00.000Z",
        "modified": "2024-05-01T10:00:00.000Z",
        "name": "198.51.100.7",
        "description": description,
        "pattern": "[ipv4-addr:value = '198.51.100.7']",
        "pattern_type": "stix",
        "valid_from": "2024-05-01T10:00:00Z",
        "labels": ["c2"],
    }
    return stream_event("create", stix, "creates a Indicator `198.51.100.7`")


TEMPLATE = json.dumps(frame("indicator--h", "@@")).replace('"@@"', "@@").encode()


def _one_line(sample: Sample) -> bool:
    return b"\n" not in sample.raw and b"\r" not in sample.raw


class OpenctiUpstream:
    name = "opencti"
    queues_while_down = True

    def __init__(self, corpus: Corpus = CORPUS) -> None:
        self.corpus = corpus
        self.url = ""
        self.emulator: OpenctiEmulator | None = None
        self._probes = itertools.count()

    def beat_args(self, port: int) -> list[str]:
        return [
            "run",
            "opencti",
            "--opencti-url",
            self.url,
            "--opencti-token",
            TOKEN,
            "--opencti-start",
            "0",
        ]

    @contextlib.asynccontextmanager
    async def serving(self, workdir: Path) -> AsyncIterator[None]:
        app = create_app(token=TOKEN, heartbeat_interval=1.0)
        async with serve_app(app) as url:
            self.url, self.emulator = url, app.state.opencti
            yield

    def _normal(self, phase: int, index: int) -> Input:
        raw = json.dumps(frame(f"indicator--00000000-0000-4000-8000-{phase:04}{index:08}"))
        return Input(f"normal {phase}/{index}", raw.encode(), "", normal=True)

    def probe(self) -> Input:
        return self._normal(9, next(self._probes))

    def inputs(self, phase: int) -> list[Input]:
        hostile = self._redelivered() if phase == 2 else self._hostile()
        return interleave(hostile, lambda index: self._normal(phase, index))

    def _hostile(self) -> list[Input]:
        items = self._forms(self.corpus.values, self.corpus.documents)
        return items + self._extras() if self.corpus.extras else items

    def _forms(self, values: tuple[Sample, ...], documents: tuple[Sample, ...] = ()) -> list[Input]:
        whole = [s for s in values + documents if _one_line(s)]
        items = [Input(f"{s.name} (frame data)", s.raw, "", why=s.why) for s in whole]
        items += [
            Input(f"{s.name} (description)", embed(TEMPLATE, s), "", why=s.why)
            for s in values
            if _one_line(s)
        ]
        return items

    def _extras(self) -> list[Input]:
        items = [
            Input(f"mistyped {where}", json.dumps(data).encode(), "", why="wrong type")
            for where, data in wrong_types(frame("indicator--typed"))
        ]
        normal = json.dumps(frame("indicator--kind")).encode()
        huge = json.dumps(frame("indicator--huge", "x" * HUGE)).encode()
        long_id = json.dumps(frame("indicator--" + "x" * 200_000)).encode()
        return [
            *items,
            Input("unknown event kind", normal, "", why="not a stream kind", options={"kind": "x"}),
            Input("huge frame", huge, "", why="16 MiB of data: no frame size limit"),
            Input("very long STIX id", long_id, "", why="a 200 KB id (subject, key)"),
        ]

    def _redelivered(self) -> list[Input]:
        items = self._forms(self.corpus.redelivered)
        for item in items:
            item.label += ", again"
        return items

    async def send(self, item: Input) -> None:
        assert self.emulator is not None
        kind = item.options.get("kind", "create")
        entry = await self.emulator.append_raw(kind, item.raw)
        item.key = str(entry)
        item.raw = item.raw.decode("utf-8", "replace").encode()  # as SSE delivers it

    def owns(self, item: Input, event: dict[str, Any]) -> bool:
        data = event.get("data")
        return isinstance(data, dict) and data.get("stream_id") == item.key

    def dead_letter_key(self, data: dict[str, Any]) -> str | None:
        context = data.get("context")
        return context.get("stream_id") if isinstance(context, dict) else None

    def lossless(self, item: Input, events: list[dict[str, Any]]) -> str | None:
        payload = Sample("", item.raw, "").value
        if payload is NOT_JSON or not isinstance(payload, dict):
            return f"committed, but the frame is not a strict JSON object: {strict_error(item.raw)}"
        if len(events) != 1:
            return f"{len(events)} events for one frame"
        data = events[0]["data"]
        for member, value in payload.items():
            if member not in _KEPT_AS:
                return f"member {member!r} is not kept"
            if not same_json(data.get(_KEPT_AS[member]), value):
                kept = json.dumps(data.get(_KEPT_AS[member]))[:80]
                return f"{member} {json.dumps(value)[:80]} is kept as {kept}"
        if data.get("kind") != item.options.get("kind", "create"):
            return f"kind {data.get('kind')!r}"
        return None


class TestOpencti(Contract):
    @pytest.fixture(scope="class")
    @classmethod
    def upstream(cls) -> OpenctiUpstream:
        return OpenctiUpstream()

    @pytest.fixture(scope="class")
    @classmethod
    def report(cls, upstream: OpenctiUpstream, tmp_path_factory: pytest.TempPathFactory) -> Report:
        return asyncio.run(run_scenario(upstream, tmp_path_factory.mktemp("opencti")))
