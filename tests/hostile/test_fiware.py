"""The FIWARE beat, as a process, subscribed to the Orion emulator and receiving notifications
over HTTP ``POST /notify`` as Orion sends them (the subscription's secret header, Orion's
headers): every hostile body of the corpus, each value of the corpus as an attribute value, the
normal notification with each member at every level mistyped, bodies at and just over
``--max-body-bytes``, a very long entity id, each after a normal notification. Orion does not
retry a notification, so after a kill -9 and a restart the redelivered ones are posted again.

Losslessly committed means: one event per entity, whose ``data.notification`` and
``data.entity`` give back the body (``{**notification, "data": [entity, ...]}``, or the entity
itself for the ``simplified*`` formats) as strict JSON with the same types; a body that is not
strict JSON cannot be committed as entities. Refused means a 4xx answer; a 400 keeps the body as
a dead letter (``/notify`` documents it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from beats.fiware.emulator import create_app
from beats.fiware.settings import FiwareSettings
from beats.fiware.subscriptions import SECRET_HEADER
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

SECRET = "hostile-suite-secret"
LIMIT: int = FiwareSettings.model_fields["max_body_bytes"].default
CORRELATOR = "fiware-correlator"


def notification(entity_id: str, value: Any = 21.5) -> dict[str, Any]:
    """What Orion sends for one changed entity (NGSI v2, ``normalized``)."""
    return {
        "subscriptionId": "5f1e2d3c4b5a69788796a5b4",
        "data": [
            {
                "id": entity_id,
                "type": "Room",
                "temperature": {"type": "Number", "value": value, "metadata": {}},
            }
        ],
    }


TEMPLATE = json.dumps(notification("Room-h", "@@")).replace('"@@"', "@@").encode()


def _body_with_string(size: int) -> bytes:
    """A notification of exactly ``size`` bytes (a long Text attribute)."""
    empty = json.dumps(notification("Room-big", "")).encode()
    return json.dumps(notification("Room-big", "x" * (size - len(empty)))).encode()


class FiwareUpstream:
    name = "fiware"
    queues_while_down = False

    def __init__(self, corpus: Corpus = CORPUS) -> None:
        self.corpus = corpus
        self.orion = ""
        self.notify = ""
        self._probes = itertools.count()

    def beat_args(self, port: int) -> list[str]:
        self.notify = f"http://127.0.0.1:{port}/notify"
        return [
            "run",
            "fiware",
            "--orion-url",
            self.orion,
            "--notify-url",
            self.notify,
            "--notify-secret",
            SECRET,
            "--subscription-check-interval",
            "0.5",
        ]

    @contextlib.asynccontextmanager
    async def serving(self, workdir: Path) -> AsyncIterator[None]:
        async with serve_app(create_app()) as url, httpx.AsyncClient(timeout=10) as self.http:
            self.orion = url
            yield

    def _normal(self, phase: int, index: int) -> Input:
        raw = json.dumps(notification(f"Room-{phase}-{index}", index)).encode()
        return Input(f"normal {phase}/{index}", raw, "", normal=True)

    def probe(self) -> Input:
        item = self._normal(0, next(self._probes))
        item.key = f"probe-{item.label}"
        return item

    def inputs(self, phase: int) -> list[Input]:
        hostile = self._redelivered() if phase == 2 else self._hostile()
        mixed = interleave(hostile, lambda index: self._normal(phase, index))
        for index, item in enumerate(mixed):
            item.key = f"hostile-{phase}-{index}"
        return mixed

    def _hostile(self) -> list[Input]:
        items = self._forms(self.corpus.values, self.corpus.documents)
        return items + self._extras() if self.corpus.extras else items

    def _forms(self, values: tuple[Sample, ...], documents: tuple[Sample, ...] = ()) -> list[Input]:
        whole = values + documents
        items = [Input(f"{s.name} (body)", s.raw, "", why=s.why) for s in whole]
        items += [
            Input(f"{s.name} (attribute value)", embed(TEMPLATE, s), "", why=s.why) for s in values
        ]
        return items

    def _extras(self) -> list[Input]:
        items = [
            Input(f"mistyped {where}", json.dumps(body).encode(), "", why="wrong type")
            for where, body in wrong_types(notification("Room-typed"))
        ]
        long_id = json.dumps(notification("Room-" + "x" * 200_000)).encode()
        return [
            *items,
            Input("body at the limit", _body_with_string(LIMIT), "", why="--max-body-bytes"),
            Input("body over the limit", _body_with_string(LIMIT + 1), "", why="1 byte over"),
            Input("very long entity id", long_id, "", why="a 200 KB id (subject, key)"),
        ]

    def _redelivered(self) -> list[Input]:
        items = self._forms(self.corpus.redelivered)
        for item in items:
            item.label += ", again"
        return items

    async def send(self, item: Input) -> None:
        headers = {
            SECRET_HEADER: SECRET,
            "Content-Type": "application/json; charset=utf-8",
            "Fiware-Service": "",
            "Fiware-ServicePath": "/",
            "Fiware-Correlator": item.key,
            "Ngsiv2-AttrsFormat": "normalized",
            "User-Agent": "orion/4.0.0 libcurl/7.74.0",
        }
        try:
            response = await self.http.post(self.notify, content=item.raw, headers=headers)
            item.status = response.status_code
        except httpx.HTTPError as exc:
            item.note = f"no answer ({type(exc).__name__}: {exc})"

    def owns(self, item: Input, event: dict[str, Any]) -> bool:
        data = event.get("data")
        return isinstance(data, dict) and data.get("correlator") == item.key

    def dead_letter_key(self, data: dict[str, Any]) -> str | None:
        context = data.get("context")
        headers = context.get("headers") if isinstance(context, dict) else None
        return headers.get(CORRELATOR) if isinstance(headers, dict) else None

    def lossless(self, item: Input, events: list[dict[str, Any]]) -> str | None:
        body = Sample("", item.raw, "").value
        if body is NOT_JSON:
            return f"committed, but the body is not strict JSON: {strict_error(item.raw)}"
        if not events:
            empty = isinstance(body, dict) and same_json(body.get("data"), [])
            return None if empty else "no event"
        data = [e["data"] for e in events]
        entities = [d.get("entity") for d in data]
        kept: Any
        if isinstance(body, dict) and "data" in body:
            kept = {**data[0].get("notification", {}), "data": entities}
        else:
            kept = entities[0] if len(entities) == 1 else entities
        return None if same_json(kept, body) else f"the events give back {_short(kept)}"


def _short(value: Any) -> str:
    return json.dumps(value)[:120]


class TestFiware(Contract):
    @pytest.fixture(scope="class")
    @classmethod
    def upstream(cls) -> FiwareUpstream:
        return FiwareUpstream()

    @pytest.fixture(scope="class")
    @classmethod
    def report(cls, upstream: FiwareUpstream, tmp_path_factory: pytest.TempPathFactory) -> Report:
        return asyncio.run(run_scenario(upstream, tmp_path_factory.mktemp("fiware")))
