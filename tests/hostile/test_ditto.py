"""The Ditto beat, as a process, subscribed over the Ditto emulator's WebSocket: every hostile
message of the corpus (text frames, and binary frames for bytes that are not UTF-8, which a text
frame cannot carry), each value of the corpus as a twin event's ``value``, the twin event with
each member at every level mistyped, frames at and just over the beat's 16 MiB WebSocket message
limit, and a very long thing id, each after a normal change made through the emulator's HTTP
API. Ditto keeps nothing for a disconnected session, so after a kill -9 and a restart the
redelivered messages are sent again.

Losslessly committed means one event whose ``data`` gives back every member of the message
(``topic``, ``headers``, ``path``, ``value``, ``revision``, ``timestamp``, ...) as strict JSON with
the same types; a normal change is committed when its thing's event carries the value written.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from beats.ditto.emulator import DittoEmulator, create_app
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
from tests.hostile.support import IDLE_SECONDS, Input, Report, interleave, run_scenario
from tests.support import eventually, serve_app

AUTH = ("ditto", "ditto")
LIMIT = 16 * 1024 * 1024
"""The beat's WebSocket ``max_size`` (beats/ditto/source.py)."""
_KEPT = ("topic", "headers", "path", "value", "revision", "timestamp", "extra", "fields", "status")


def message(thing: str, value: Any = 1) -> dict[str, Any]:
    """A twin event as Ditto sends it on the WebSocket."""
    namespace, name = thing.split(":", 1)
    return {
        "topic": f"{namespace}/{name}/things/twin/events/modified",
        "headers": {"correlation-id": f"c-{name}", "content-type": "application/json"},
        "path": "/attributes/v",
        "value": value,
        "revision": 7,
        "timestamp": "2024-05-01T10:00:00.000Z",
    }


def _template(thing: str) -> bytes:
    return json.dumps(message(thing, "@@")).replace('"@@"', "@@").encode()


def _sized(thing: str, size: int) -> bytes:
    empty = json.dumps(message(thing, "")).encode()
    return json.dumps(message(thing, "x" * (size - len(empty)))).encode()


class DittoUpstream:
    name = "ditto"
    queues_while_down = False

    def __init__(self, corpus: Corpus = CORPUS) -> None:
        self.corpus = corpus
        self.url = ""
        self.emulator: DittoEmulator | None = None
        self._probes = itertools.count()
        self._gone = False

    def beat_args(self, port: int) -> list[str]:
        user, password = AUTH
        return [
            *("run", "ditto", "--ditto-url", self.url),
            *("--ditto-username", user, "--ditto-password", password),
        ]

    @contextlib.asynccontextmanager
    async def serving(self, workdir: Path) -> AsyncIterator[None]:
        app = create_app()
        async with (
            serve_app(app) as url,
            httpx.AsyncClient(base_url=url, auth=AUTH, timeout=60) as self.http,
        ):
            self.url, self.emulator = url, app.state.ditto
            yield

    def _normal(self, phase: int, index: int) -> Input:
        thing = f"normal:n{phase}-{index}"
        put = f"PUT /api/2/things/{thing}".encode()  # the beat gets Ditto's event for it
        return Input(f"normal {phase}/{index}", put, thing, normal=True, options={"value": index})

    def probe(self) -> Input:
        return self._normal(9, next(self._probes))

    def inputs(self, phase: int) -> list[Input]:
        things = (f"hostile:h{phase}-{n}" for n in itertools.count())
        if phase == 2:
            hostile = self._forms(things, self.corpus.redelivered)
            for item in hostile:
                item.label += ", again"
        else:
            hostile = self._forms(things, self.corpus.values, self.corpus.documents)
            hostile += self._extras(things) if self.corpus.extras else []
        return interleave(hostile, lambda index: self._normal(phase, index))

    def _forms(
        self, things: Iterator[str], values: tuple[Sample, ...], documents: tuple[Sample, ...] = ()
    ) -> list[Input]:
        items = [Input(f"{s.name} (message)", s.raw, "", why=s.why) for s in values + documents]
        for sample in values:
            thing = next(things)
            raw = embed(_template(thing), sample)
            items.append(Input(f"{sample.name} (value)", raw, thing, why=sample.why))
        return items

    def _extras(self, things: Iterator[str]) -> list[Input]:
        items = []
        for n in range(len(list(wrong_types(message("hostile:t"))))):
            thing = next(things)  # each its own thing: its events are told apart
            where, changed = list(wrong_types(message(thing)))[n]
            raw = json.dumps(changed).encode()
            items.append(Input(f"mistyped {where}", raw, thing, why="wrong type"))
        at, over, binary, long = next(things), next(things), next(things), next(things)
        long += "x" * 200_000
        return [
            *items,
            Input("message at the limit", _sized(at, LIMIT), at, why="16 MiB"),
            Input("message over the limit", _sized(over, LIMIT + 1), over, why="1 byte over"),
            Input(
                "a normal event as a binary frame",
                json.dumps(message(binary)).encode(),
                binary,
                options={"binary": True},
            ),
            Input("very long thing id", json.dumps(message(long)).encode(), long),
        ]

    async def send(self, item: Input) -> None:
        assert self.emulator is not None
        emulator = self.emulator

        def subscribed() -> bool:
            return any("twin-events" in s.subscriptions for s in emulator.sessions)

        patience = 0.5 if self._gone else IDLE_SECONDS  # a beat that stays away costs once
        try:
            await eventually(subscribed, timeout=patience, what="a subscribed session")
        except AssertionError:
            self._gone = True
            item.note = "not sent: the beat had no subscribed session"
            return
        self._gone = False
        if item.normal:
            thing = {"attributes": {"n": item.options["value"]}}
            response = await self.http.put(f"/api/2/things/{item.key}", json=thing)
        else:
            response = await self.http.post("/admin/raw", content=item.raw, headers=_type(item))
        response.raise_for_status()

    def owns(self, item: Input, event: dict[str, Any]) -> bool:
        return event.get("subject") == item.key

    def dead_letter_key(self, data: dict[str, Any]) -> str | None:
        return None

    def lossless(self, item: Input, events: list[dict[str, Any]]) -> str | None:
        if item.normal:
            written = {"n": item.options["value"]}
            values = [e["data"].get("value") for e in events]
            found = [v.get("attributes") for v in values if isinstance(v, dict)]
            return None if any(same_json(a, written) for a in found) else f"values {values}"
        sent = Sample("", item.raw, "").value
        if sent is NOT_JSON or not isinstance(sent, dict):
            return (
                f"committed, but the message is not a strict JSON object: {strict_error(item.raw)}"
            )
        if len(events) != 1:
            return f"{len(events)} events for one message"
        data = events[0]["data"]
        for member, value in sent.items():
            if member not in _KEPT:
                return f"member {member!r} is not kept"
            if not same_json(data.get(member), value):
                return (
                    f"{member} {json.dumps(value)[:80]} kept as {json.dumps(data.get(member))[:80]}"
                )
        return None


def _type(item: Input) -> dict[str, str]:
    try:
        item.raw.decode("utf-8")
    except UnicodeDecodeError:
        binary = True
    else:
        binary = bool(item.options.get("binary"))
    return {"Content-Type": "application/octet-stream" if binary else "text/plain"}


class TestDitto(Contract):
    @pytest.fixture(scope="class")
    @classmethod
    def upstream(cls) -> DittoUpstream:
        return DittoUpstream()

    @pytest.fixture(scope="class")
    @classmethod
    def report(cls, upstream: DittoUpstream, tmp_path_factory: pytest.TempPathFactory) -> Report:
        return asyncio.run(run_scenario(upstream, tmp_path_factory.mktemp("ditto")))
