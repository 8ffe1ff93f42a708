"""Marking definitions: loaded from the platform's GraphQL API, learned from the stream, kept
in the event log across restarts; ``/readyz`` says how they were loaded; every event and dead
letter carries ``tlp`` computed from everything it carries. All through the emulator over HTTP."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import stix2

from beats.opencti.emulator import create_app
from beats.opencti.markings import QUERY, MarkingsUnavailable, fetch_platform_markings
from beats.opencti.scenario import Scenario, stream_event, with_extension
from tests.opencti.conftest import TOKEN
from tests.opencti.test_opencti_beat import add, opencti_beat
from tests.support import eventually, read_sse, run_beat, serve_app

GREEN = "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da"
RED = "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed"


def custom_marking(name: str, kind: str = "TLP") -> dict[str, Any]:
    """A platform's own marking, as OpenCTI sends it on the stream (name = definition, its own
    definition type, no ``definition`` object, order in its extension)."""
    marking = stix2.MarkingDefinition(
        definition_type="statement", definition={"statement": name}, name=name
    )
    stix = with_extension(marking, "Marking-Definition", order=9, color="#ff0000")
    del stix["definition"]
    stix["definition_type"] = kind
    return stix


def indicator(*markings: str) -> dict[str, Any]:
    stix, _ = Scenario(seed=len(markings)).indicator()
    stix["object_marking_refs"] = list(markings)
    return stix


def creates(*objects: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"kind": "create", "data": stream_event("create", o, "creates")} for o in objects]


async def levels(base: str, count: int) -> dict[str, str]:
    messages = await read_sse(f"{base}/events?last_event_id=0", count=count)
    return {m.json()["subject"]: m.json()["tlp"] for m in messages}


async def readiness(base: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        checks: dict[str, Any] = (await client.get(f"{base}/readyz")).json()["checks"]
        return checks


async def test_platform_markings_are_loaded_then_known_after_a_restart(tmp_path: Path) -> None:
    ours_green, ours_red = custom_marking("TLP:GREEN"), custom_marking("ACME:INTERNAL", "ACME")
    first = create_app(token=TOKEN, heartbeat_interval=0.2)
    first.state.opencti.add_marking(ours_green)  # on the platform, never on the stream
    first.state.opencti.add_marking(ours_red)
    a, b = indicator(ours_green["id"]), indicator(ours_red["id"])
    async with serve_app(first) as url:
        await add(url, creates(a, b))
        beat = opencti_beat(tmp_path, url)
        async with run_beat(beat) as base:
            found = await levels(base, 2)
            checks = await readiness(base)
    assert found == {a["id"]: "green", b["id"]: "red"}
    assert checks["markings"]["ok"] and "loaded" in checks["markings"]["detail"]
    # the platform's API is gone; the log still knows what was loaded
    second = create_app(token=TOKEN, heartbeat_interval=0.2, graphql=False)
    c = indicator(ours_green["id"], GREEN)
    async with serve_app(second) as url:
        await add(url, creates(c))
        beat = opencti_beat(tmp_path, url)
        async with run_beat(beat) as base:
            await eventually(lambda: beat.log.head == 3, what="the third event")
            found = await levels(base, 3)
            checks = await readiness(base)
    assert found[c["id"]] == "green"
    assert checks["markings"]["ok"] and "HTTP 404" in checks["markings"]["detail"]
    assert "unknown ones count as red" in checks["markings"]["detail"]


async def test_markings_learned_from_the_stream_survive_a_restart(tmp_path: Path) -> None:
    """Custom markings are remembered durably: an object with a custom red marking is red
    before and after a restart, one with a custom green marking green (not red: known)."""
    ours_green, ours_red = custom_marking("TLP:GREEN"), custom_marking("TLP:RED")
    unknown = "marking-definition--00000000-0000-4000-8000-000000000000"
    app = create_app(token=TOKEN, heartbeat_interval=0.2, graphql=False)
    async with serve_app(app) as url:
        markings = [{"kind": "create", "data": stream_event("create", m, "x")} for m in
                    (ours_green, ours_red)]  # fmt: skip
        a, b, u = indicator(ours_green["id"]), indicator(ours_red["id"]), indicator(unknown)
        await add(url, [*markings, *creates(a, b, u)])
        beat = opencti_beat(tmp_path, url)
        async with run_beat(beat):
            await eventually(lambda: beat.log.head == 5, what="five events")
        c, d = indicator(ours_green["id"]), indicator(ours_red["id"], GREEN)
        await add(url, creates(c, d))
        beat = opencti_beat(tmp_path, url, opencti_start=None)
        async with run_beat(beat) as base:
            await eventually(lambda: beat.log.head == 7, what="seven events")
            found = await levels(base, 7)
    assert found[a["id"]] == found[c["id"]] == "green"
    assert found[b["id"]] == found[d["id"]] == found[u["id"]] == "red"
    assert found[ours_green["id"]] == found[ours_red["id"]] == "clear"  # definitions: unmarked


async def test_previous_versions_merge_sources_and_dead_letters_are_judged(
    tmp_path: Path,
) -> None:
    app = create_app(token=TOKEN, heartbeat_interval=0.2)
    scenario = Scenario(seed=4)
    red, _ = scenario.malware()
    red["object_marking_refs"] = [RED]
    scenario.known = {red["id"]: red}
    declassified = json.loads(json.dumps(red))
    declassified["object_marking_refs"] = [GREEN]
    update = stream_event("update", declassified, "replaces markings", _patch(red, declassified))
    target, _ = scenario.malware()
    target["object_marking_refs"] = [GREEN]
    merge = stream_event("merge", target, "merges", {"patch": [], "reverse_patch": [],
                                                     "sources": [red]})  # fmt: skip
    async with serve_app(app) as url:
        await add(url, [{"kind": "update", "data": update}, {"kind": "merge", "data": merge}])
        await add(url, [{"kind": "create", "raw": '{"data": {"object_marking_refs": ["x"'}])
        await add(url, [{"kind": "boom", "data": stream_event("create", target, "x")}])
        beat = opencti_beat(tmp_path, url)
        async with run_beat(beat) as base:
            messages = await read_sse(f"{base}/events?last_event_id=0", count=4)
    events = [m.json() for m in messages]
    assert [e["type"] for e in events] == [
        "beats.opencti.update",
        "beats.opencti.merge",
        "beats.opencti.deadletter",
        "beats.opencti.deadletter",
    ]
    assert events[0]["data"]["previous"]["object_marking_refs"] == [RED]
    assert [e["tlp"] for e in events] == ["red", "red", "red", "red"]


def _patch(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    import jsonpatch

    return {
        "patch": jsonpatch.make_patch(before, after).patch,
        "reverse_patch": jsonpatch.make_patch(after, before).patch,
    }


class FailingGraphql:
    """The emulator behind an ASGI wrapper whose ``/graphql`` answers 503 while ``failing``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.failing = True
        self.calls = 0

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] == "http" and scope["path"] == "/graphql":
            self.calls += 1
            if self.failing:
                await send({"type": "http.response.start", "status": 503, "headers": []})
                await send({"type": "http.response.body", "body": b"down"})
                return
        await self.app(scope, receive, send)


async def test_a_failing_platform_api_is_not_ready_and_retried(tmp_path: Path) -> None:
    ours = custom_marking("TLP:AMBER")
    app = create_app(token=TOKEN, heartbeat_interval=0.2)
    app.state.opencti.add_marking(ours)
    wrapped = FailingGraphql(app)
    async with serve_app(wrapped) as url:
        await add(url, creates(indicator(GREEN)))
        beat = opencti_beat(tmp_path, url)
        async with run_beat(beat) as base:
            await eventually(lambda: beat.log.head == 1, what="the stream consumed anyway")
            checks = await readiness(base)
            assert not checks["markings"]["ok"] and "HTTP 503" in checks["markings"]["detail"]
            wrapped.failing = False
            await eventually(lambda: beat.source.markings.get(ours["id"]) == "amber",  # type: ignore[attr-defined]
                             timeout=15, what="the retried load")  # fmt: skip
            checks = await readiness(base)
    assert checks["markings"]["ok"] and wrapped.calls >= 2


async def test_graphql_answers_as_opencti_does(tmp_path: Path) -> None:
    app = create_app(token=TOKEN)
    async with serve_app(app) as url, httpx.AsyncClient() as http:
        loaded = await fetch_platform_markings(http, f"{url}/graphql", TOKEN)
        refused = await http.post(f"{url}/graphql", json={"query": QUERY})
        invalid = await http.post(
            f"{url}/graphql",
            json={"query": "{ markingDefinitions { edges { node { password } } } }"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        try:
            await fetch_platform_markings(http, f"{url}/graphql", "wrong")
        except MarkingsUnavailable as exc:
            wrong = str(exc)
    assert loaded[GREEN] == "green" and loaded[RED] == "red" and len(loaded) >= 5
    assert refused.json()["errors"][0]["extensions"]["code"] == "AUTH_REQUIRED"
    assert invalid.status_code == 400
    assert invalid.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "AUTH_REQUIRED" in wrong
