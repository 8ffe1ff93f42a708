"""The OpenCTI emulator over real HTTP: connected first, heartbeats, auth, collections (401,
410), resume without gap or duplicate, drop-every-N, live-stream dependencies and filters,
recover, the scenario, and serve()."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

import httpx
import pytest

from beats.opencti.emulator import EmulatorSettings, StreamStore, create_app, main, serve
from beats.opencti.frames import Frame, StreamId
from beats.opencti.scenario import AUTHOR, Scenario, stream_event
from beats.opencti.stix import OCTI_EXTENSION
from tests.opencti.conftest import AUTH, TOKEN, Emulator, data_frames, read_frames
from tests.support import eventually, free_port, serve_app


async def fill(emulator: Emulator, count: int, seed: int = 1) -> list[StreamId]:
    scenario = Scenario(seed=seed)
    return [await emulator.api.append(scenario.create()) for _ in range(count)]


def heartbeats(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if f.kind == "heartbeat"]


async def test_connected_first_then_heartbeats_with_ids(emulator: Emulator) -> None:
    frames = await read_frames(f"{emulator.url}/stream", until=3)
    connected = frames[0]
    assert connected.kind == "connected" and connected.id == ""
    info = json.loads(connected.data)
    assert {"lastEventId", "firstEventId", "streamSize", "connectionId"} <= set(info)
    assert [f.kind for f in frames[1:]] == ["heartbeat", "heartbeat"]
    for beat in frames[1:]:
        position = StreamId.parse(beat.id)
        assert json.loads(beat.data) == position.iso()  # a JSON string: the id's time
    assert StreamId.parse(frames[2].id) >= StreamId.parse(frames[1].id)


async def test_heartbeats_report_the_last_id_read_and_keep_coming(emulator: Emulator) -> None:
    ids = await fill(emulator, 3)
    frames = await read_frames(
        f"{emulator.url}/stream",
        params={"from": "0"},
        until=lambda fs: len(heartbeats(fs)) >= 2,
    )
    assert [f.id for f in data_frames(frames)] == [str(i) for i in ids]
    assert all(StreamId.parse(b.id) >= ids[-1] for b in heartbeats(frames))
    # an event appended after an idle heartbeat sorts after it: resuming there loses nothing
    mark = heartbeats(frames)[-1].id
    later = await emulator.api.append(Scenario(seed=9).create())
    assert later > StreamId.parse(mark)
    resumed = await read_frames(f"{emulator.url}/stream", headers={"Last-Event-ID": mark}, until=2)
    assert resumed[1].id == str(later)


async def test_heartbeats_come_on_time_during_steady_traffic() -> None:
    app = create_app(token=TOKEN, heartbeat_interval=0.2, scenario_rate=100, scenario_seed=4)
    async with serve_app(app) as url:
        frames = await read_frames(
            f"{url}/stream", until=lambda fs: len(heartbeats(fs)) >= 3, timeout=5
        )
    assert len(data_frames(frames)) > 10


async def test_without_or_with_a_wrong_token_the_stream_is_401(emulator: Emulator) -> None:
    async with httpx.AsyncClient() as client:
        for path in ("/stream", "/stream/live"):
            bare = await client.get(f"{emulator.url}{path}")
            wrong = await client.get(f"{emulator.url}{path}", headers={"Authorization": "Bearer x"})
            assert bare.status_code == wrong.status_code == 401
            assert "not authenticated" in bare.json()["statusMessage"]


async def test_collections_unknown_public_stopped_deleted(emulator: Emulator) -> None:
    base = f"{emulator.url}/stream"
    async with httpx.AsyncClient() as client:
        unknown = await client.get(f"{base}/nope", headers=AUTH)
        assert unknown.status_code == 401  # OpenCTI: "not authorized" for an unknown collection
        await client.post(f"{emulator.url}/admin/streams/open", params={"public": True})
        await client.post(f"{emulator.url}/admin/streams/s1/stop")
        stopped = await client.get(f"{base}/s1", headers=AUTH)
        assert stopped.status_code == 410
        assert stopped.json()["statusMessage"] == "This live stream is stopped"
        await client.post(f"{emulator.url}/admin/streams/s1/start")
        assert (await client.get(f"{base}/s1")).status_code == 401  # not public
        await client.delete(f"{emulator.url}/admin/streams/s1")
        assert (await client.get(f"{base}/s1", headers=AUTH)).status_code == 401
    frames = await read_frames(f"{base}/open", headers={"Authorization": ""}, until=1)
    assert frames[0].kind == "connected"


async def test_stopping_a_live_stream_ends_its_connections(emulator: Emulator) -> None:
    await emulator.api.create_stream("s2")

    async def stop_soon() -> None:
        await asyncio.sleep(0.3)
        await emulator.api.set_started("s2", False)

    stopper = asyncio.create_task(stop_soon())
    frames = await read_frames(f"{emulator.url}/stream/s2", until=1000, timeout=5)
    await stopper
    assert frames[0].kind == "connected" and len(frames) < 1000


@pytest.mark.parametrize("how", ["last-event-id", "from-query", "from-header"])
async def test_resume_after_an_id_without_gap_or_duplicate(emulator: Emulator, how: str) -> None:
    ids = [str(i) for i in await fill(emulator, 10)]
    position = {
        "last-event-id": ({"Last-Event-ID": ids[4]}, None),
        "from-query": ({}, {"from": ids[4]}),
        "from-header": ({"from": ids[4]}, None),
    }[how]
    frames = await read_frames(
        f"{emulator.url}/stream", headers=position[0], params=position[1], until=6
    )
    assert [f.id for f in data_frames(frames)] == ids[5:]


async def test_start_from_the_beginning_a_date_or_now(emulator: Emulator) -> None:
    ids = await fill(emulator, 4)
    everything = await read_frames(f"{emulator.url}/stream", params={"from": "0-0"}, until=5)
    assert [f.id for f in data_frames(everything)] == [str(i) for i in ids]
    since = StreamId(ids[2].millis - 1, 0)  # a date means "after <its ms>-0"
    expected = [str(i) for i in ids if i > since]
    dated = await read_frames(
        f"{emulator.url}/stream", params={"from": since.iso()}, until=len(expected) + 1
    )
    assert [f.id for f in data_frames(dated)] == expected
    live = await read_frames(f"{emulator.url}/stream", until=2)  # "from now": no history
    assert data_frames(live) == [] and live[1].kind == "heartbeat"


async def test_drop_every_n_frames_and_resume_loses_nothing() -> None:
    app = create_app(token=TOKEN, heartbeat_interval=0.2, drop_every=3)
    async with serve_app(app) as url:
        scenario = Scenario(seed=2)
        expected = [str(await app.state.opencti.append(scenario.create())) for _ in range(8)]
        seen: list[str] = []
        connections = 0
        while len(seen) < len(expected):
            headers = {"Last-Event-ID": seen[-1]} if seen else {}
            frames = await read_frames(
                f"{url}/stream",
                headers=headers,
                params=None if seen else {"from": "0"},
                until=lambda fs: fs[-1].kind == "heartbeat",  # all read: the stream idles
            )
            connections += 1
            assert len(data_frames(frames)) <= 3
            seen += [f.id for f in data_frames(frames)]
    assert seen == expected
    assert connections == 3


async def test_live_stream_sends_dependencies_first_under_the_same_id(emulator: Emulator) -> None:
    scenario = Scenario(seed=5)
    indicator, _ = scenario.indicator()
    event_id = await emulator.api.append(stream_event("create", indicator, "creates"))
    frames = await read_frames(f"{emulator.url}/stream/live", params={"from": "0"}, until=4)
    creates = data_frames(frames)
    assert [f.id for f in creates] == [str(event_id)] * 3
    dependencies = [json.loads(f.data) for f in creates[:2]]
    assert {d["data"]["id"] for d in dependencies} == {
        indicator["object_marking_refs"][0],
        AUTHOR["id"],
    }
    assert all(d["origin"] == {"referer": "dependencies"} for d in dependencies)
    main_event = json.loads(creates[2].data)
    updated = datetime.fromisoformat(
        indicator["extensions"][OCTI_EXTENSION]["updated_at"].replace("Z", "+00:00")
    )
    assert main_event["event_id"] == str(StreamId.at(updated, 0))
    raw = await read_frames(f"{emulator.url}/stream", params={"from": "0"}, until=2)
    assert "event_id" not in json.loads(raw[1].data) and raw[1].id == str(event_id)


async def test_live_stream_filters(emulator: Emulator) -> None:
    scenario = Scenario(seed=6)
    stix = scenario.create()["data"]
    inferred = json.loads(json.dumps(stix))
    inferred["extensions"][OCTI_EXTENSION]["is_inferred"] = True
    old = {**stream_event("create", stix, "old"), "version": "3"}
    internal = {**stream_event("create", stix, "internal"), "scope": "internal"}
    deletion = stream_event("delete", stix, "deletes", {"deletions": [stix]})
    for event in (old, internal, stream_event("create", inferred, "inferred"), deletion):
        await emulator.api.append(event)
    marker = await emulator.api.append(scenario.create())

    async def kinds(path: str, **params: str) -> list[str]:
        frames = await read_frames(
            f"{emulator.url}{path}",
            params={"from": "0", **params},
            until=lambda fs: (
                any(f.id == str(marker) and f.kind == "create" for f in fs[-1:])
                and json.loads(fs[-1].data)["data"]["id"] != AUTHOR["id"]
            ),
        )
        return [json.loads(f.data).get("message", "") for f in data_frames(frames)]

    assert "internal" not in await kinds("/stream")
    assert "old" in await kinds("/stream")
    live = await kinds("/stream/live")
    assert "old" not in live and "inferred" not in live and "deletes" in live
    assert "inferred" in await kinds("/stream/live", **{"with-inferences": "true"})
    assert "deletes" not in await kinds("/stream/live", **{"listen-delete": "false"})


async def test_recover_needs_a_start_then_sends_current_state_and_tails(
    emulator: Emulator,
) -> None:
    scenario = Scenario(seed=7)
    created = [scenario.create() for _ in range(4)]
    gone = created[0]["data"]
    for event in [*created, stream_event("delete", gone, "x", {"deletions": [gone]})]:
        last = await emulator.api.append(event)
    until = StreamId(last.millis + 1).iso()  # the tail starts after <until ms>-0
    async with httpx.AsyncClient() as client:
        refused = await client.get(
            f"{emulator.url}/stream/live", params={"recover": until}, headers=AUTH
        )
    assert refused.status_code == 500
    assert "only possible with a start date" in refused.json()["statusMessage"]
    after = None

    def tailed(frames: list[Frame]) -> bool:
        return after is not None and any(f.id == str(after) for f in frames)

    async def append_later() -> None:
        nonlocal after
        await asyncio.sleep(0.3)
        after = await emulator.api.append(scenario.create())

    appender = asyncio.create_task(append_later())
    frames = await read_frames(
        f"{emulator.url}/stream/live", params={"from": "0", "recover": until}, until=tailed
    )
    await appender
    recovered = [json.loads(f.data) for f in data_frames(frames) if f.id != str(after)]
    init = [r["data"]["id"] for r in recovered if r["origin"] == {"referer": "init"}]
    assert set(init) >= {e["data"]["id"] for e in created[1:]} and gone["id"] not in init
    assert all(f.kind == "create" for f in data_frames(frames))


async def test_admin_http_appends_shared_ids_and_raw_frames(emulator: Emulator) -> None:
    scenario = Scenario(seed=8)
    events = [{"data": scenario.create()} for _ in range(3)]
    async with httpx.AsyncClient() as client:
        shared = await client.post(
            f"{emulator.url}/admin/events", json=events, params={"shared_id": True}
        )
        raw = await client.post(
            f"{emulator.url}/admin/events", json=[{"kind": "create", "raw": "{broken"}]
        )
    ids = shared.json()["ids"]
    assert len(set(ids)) == 1 and len(ids) == 3
    frames = await read_frames(f"{emulator.url}/stream", params={"from": "0"}, until=5)
    assert [f.id for f in frames[1:4]] == ids
    assert frames[4] == Frame("create", raw.json()["ids"][0], "{broken")


async def test_scenario_generates_every_kind_at_a_rate() -> None:
    app = create_app(token=TOKEN, scenario_rate=200, scenario_seed=3)
    store: StreamStore = app.state.opencti.store

    def every_kind() -> bool:
        return {e.kind for e in store.entries} == {"create", "update", "delete", "merge"}

    async with serve_app(app):
        await eventually(every_kind, timeout=15, what="every kind of event")
    assert any(json.loads(e.data)["data"]["type"] == "report" for e in store.entries)


async def test_serve_runs_until_cancelled_and_main_until_shutdown() -> None:
    port = free_port()
    task = asyncio.create_task(serve(port=port, token=TOKEN))
    async with httpx.AsyncClient() as client:

        async def up() -> bool:
            try:
                return (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(up, what="serve() to answer")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not await up()
        shutdown = asyncio.Event()
        runner = asyncio.create_task(main(EmulatorSettings(port=port), shutdown))
        await eventually(up, what="main() to answer")
        shutdown.set()
        await asyncio.wait_for(runner, timeout=10)
        assert not await up()


async def test_odd_events_never_break_a_live_connection(emulator: Emulator) -> None:
    odd: list[dict[str, Any]] = [
        {"version": "4", "type": "create", "data": {"id": "x--1", "extensions": 5}},
        {"version": "4", "type": "merge", "data": {"id": "x--2"}, "context": "nope"},
        {"version": "four", "type": "update", "data": {"id": "x--3"}},
        {"version": "4", "type": "create", "data": {"type": "indicator"}},
        {"version": "4", "type": "create", "data": ["not", "an", "object"]},
    ]
    for event in odd:
        await emulator.api.append(event)
    marker = await emulator.api.append(Scenario(seed=10).create())
    with pytest.raises(ValueError, match="one line"):
        await emulator.api.append_raw("create", "two\nlines")
    async with httpx.AsyncClient() as client:
        refused = await client.post(
            f"{emulator.url}/admin/events", json=[{"kind": "create", "raw": "a\nb"}]
        )
        # not a marking definition: a 400, none added (was a 500, found by Schemathesis)
        marking = {"type": "marking-definition", "id": "marking-definition--ok"}
        bad_marking = await client.post(f"{emulator.url}/admin/markings", json=[marking, {}])
    assert refused.status_code == 400 and "raw" in refused.json()["detail"]
    assert bad_marking.status_code == 400 and "marking" in bad_marking.json()["error"]
    assert "marking-definition--ok" not in emulator.api.store.objects
    frames = await read_frames(
        f"{emulator.url}/stream/live",
        params={"from": "0"},
        until=lambda fs: (
            fs[-1].id == str(marker)
            and fs[-1].kind == "create"
            and json.loads(fs[-1].data)["origin"]["referer"] == "emulator"
        ),
    )
    payloads = [json.loads(f.data)["data"] for f in data_frames(frames)]
    sent = {p.get("id") for p in payloads if isinstance(p, dict)}
    assert ["not", "an", "object"] in payloads  # malformed entries pass unchanged
    assert {"x--1", "x--2"} <= sent and "x--3" not in sent  # version "four" is not >= 4


async def test_trimming_keeps_the_newest_entries_and_says_where_the_stream_starts() -> None:
    app = create_app(token=TOKEN, heartbeat_interval=0.2, trimming=5)
    async with serve_app(app) as url:
        emulator = Emulator(url, app.state.opencti)
        ids = await fill(emulator, 8)
        assert len(emulator.api.store.entries) == 5
        frames = await read_frames(f"{url}/stream", headers={"Last-Event-ID": str(ids[0])}, until=6)
    info = json.loads(frames[0].data)
    assert (info["firstEventId"], info["streamSize"]) == (str(ids[3]), 5)
    # resuming before the first kept entry gives what is left, as Redis does
    assert [f.id for f in data_frames(frames)] == [str(i) for i in ids[3:]]


def test_the_scenario_world_stays_bounded() -> None:
    scenario = Scenario(seed=3, population=20)
    kinds = [scenario.next()["type"] for _ in range(2000)]
    assert len(scenario.known) <= 20
    assert kinds.count("create") > 200  # it keeps creating, balanced by deletions
