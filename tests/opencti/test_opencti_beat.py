"""The OpenCTI beat against the emulator over real HTTP: every event kind, resume after
dropped connections and restarts (no loss, no duplicate), 401/410, malformed frames, TLP,
previous objects, large bundles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import stix2

from beats.opencti.emulator import create_app
from beats.opencti.scenario import Scenario, stream_event, with_extension
from beats.opencti.service import build
from beats.opencti.settings import OpenctiSettings
from beats.opencti.stix import STANDARD_TLP_IDS
from common.service import Beat
from tests.brokers import KafkaBroker, consume
from tests.opencti.conftest import TOKEN, Emulator
from tests.support import eventually, free_port, read_sse, run_beat, serve_app


async def add(url: str, events: list[dict[str, Any]], *, shared_id: bool = False) -> list[str]:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{url}/admin/events", json=events, params={"shared_id": shared_id}
        )
        response.raise_for_status()
        ids: list[str] = response.json()["ids"]
        return ids


def scenario_events(count: int, seed: int = 1) -> list[dict[str, Any]]:
    scenario = Scenario(seed=seed)
    return [{"kind": e["type"], "data": e} for e in (scenario.next() for _ in range(count))]


def opencti_beat(tmp_path: Path, url: str, **options: Any) -> Beat:
    options.setdefault("opencti_token", TOKEN)
    options.setdefault("opencti_start", "0")
    settings = OpenctiSettings(
        port=free_port(), data_dir=tmp_path / "opencti", opencti_url=url, **options
    )
    return build(settings)


async def test_every_event_kind_reaches_sse_with_the_transformation(
    tmp_path: Path, emulator: Emulator
) -> None:
    url = emulator.url
    scenario = Scenario(seed=3)
    malware, message = scenario.malware()
    created = stream_event("create", malware, message)
    scenario.known = {malware["id"]: malware}
    updated = scenario.update()
    duplicate, _ = scenario.malware()
    scenario.known[duplicate["id"]] = duplicate
    merged = scenario.merge()
    deleted = stream_event("delete", created["data"], "deletes", {"deletions": [created["data"]]})
    await add(url, [{"kind": e["type"], "data": e} for e in (created, updated, merged, deleted)])
    beat = opencti_beat(tmp_path, url)
    async with run_beat(beat) as base:
        messages = await read_sse(f"{base}/events?last_event_id=0", count=4)
    kinds = [m.event for m in messages]
    assert kinds == [f"beats.opencti.{k}" for k in ("create", "update", "merge", "delete")]
    update = messages[1].json()
    assert update["data"]["previous"] == created["data"]
    assert update["data"]["patch"] and update["data"]["reverse_patch"]
    assert update["subject"] == update["partitionkey"] == created["data"]["id"]
    assert "tlp" in update and update["stixtype"] == created["data"]["type"]
    assert messages[2].json()["data"]["context"]["sources"]
    assert messages[3].json()["data"]["context"]["deletions"] == [created["data"]]


async def test_dropped_connections_resume_without_loss_or_duplicate(
    tmp_path: Path,
) -> None:
    app = create_app(token=TOKEN, heartbeat_interval=0.2, drop_every=7)
    async with serve_app(app) as url:
        await add(url, scenario_events(60))
        beat = opencti_beat(tmp_path, url)
        async with run_beat(beat) as base:
            await eventually(lambda: beat.log.head >= 60, timeout=30, what="60 committed")
            messages = await read_sse(f"{base}/events?last_event_id=0", count=60)
            assert beat.log.head == 60
    stream_ids = [m.json()["data"]["stream_id"] for m in messages]
    assert len(set(stream_ids)) == 60
    assert stream_ids == sorted(stream_ids, key=lambda i: tuple(map(int, i.split("-"))))
    assert beat.metrics.reconnects._value.get() >= 8


async def test_restart_resumes_from_the_saved_position(tmp_path: Path, emulator: Emulator) -> None:
    url = emulator.url
    await add(url, scenario_events(20, seed=5))
    first = opencti_beat(tmp_path, url)
    async with run_beat(first):
        await eventually(lambda: first.log.head == 20, what="first 20")
    await add(url, scenario_events(15, seed=6))
    # frames that share one id (OpenCTI's dependency resolution) must all arrive
    await add(url, scenario_events(5, seed=7), shared_id=True)
    second = opencti_beat(tmp_path, url, opencti_start=None)
    async with run_beat(second) as base:
        await eventually(lambda: second.log.head == 40, what="all 40 after the restart")
        messages = await read_sse(f"{base}/events?last_event_id=0", count=40)
    assert len({m.json()["id"] for m in messages}) == 40


async def test_unauthorized_and_stopped_streams_are_reported(
    tmp_path: Path, emulator: Emulator
) -> None:
    url = emulator.url
    async with httpx.AsyncClient() as client:
        await client.post(f"{url}/admin/streams/s2/stop")
    for beat, expected in (
        (opencti_beat(tmp_path / "a", url, opencti_token="wrong"), "HTTP 401"),
        (opencti_beat(tmp_path / "b", url, stream_id="s2"), "HTTP 410"),
    ):
        async with run_beat(beat) as base, httpx.AsyncClient() as client:
            await eventually(lambda b=beat: b.metrics.reconnects._value.get() >= 1)
            response = await client.get(f"{base}/readyz")
            assert response.status_code == 503
            assert expected in response.json()["checks"]["opencti"]["detail"]
            assert "wrong" not in response.text


async def test_malformed_frames_are_dead_lettered_and_the_stream_goes_on(
    tmp_path: Path, emulator: Emulator
) -> None:
    url = emulator.url
    good = scenario_events(2, seed=9)
    await add(
        url, [good[0], {"kind": "create", "raw": "{broken"}, {"kind": "boom", "data": {}}, good[1]]
    )
    beat = opencti_beat(tmp_path, url)
    async with run_beat(beat) as base:
        messages = await read_sse(f"{base}/events?last_event_id=0", count=4)
    kinds = [m.event for m in messages]
    assert kinds == [
        "beats.opencti.create",
        "beats.opencti.deadletter",
        "beats.opencti.deadletter",
        "beats.opencti.create",
    ]
    assert "not JSON" in messages[1].json()["data"]["reason"]
    assert "unknown stream event kind" in messages[2].json()["data"]["reason"]
    assert beat.metrics.dead_lettered._value.get() == 2


async def test_large_bundles(tmp_path: Path, emulator: Emulator) -> None:
    url = emulator.url
    scenario = Scenario(seed=11)
    refs = [scenario.indicator()[0]["id"] for _ in range(3000)]
    report = scenario.report(refs)
    await add(url, [{"kind": "create", "data": report}])
    beat = opencti_beat(tmp_path, url)
    async with run_beat(beat) as base:
        (message,) = await read_sse(f"{base}/events/reports?last_event_id=0", count=1)
    event = message.json()
    assert len(event["data"]["stix"]["object_refs"]) == 3000
    assert event["tlp"] == "amber"
    assert len(message.data) > 150_000


def test_scenario_objects_carry_the_opencti_extension() -> None:
    stix = with_extension(stix2.Malware(name="X", is_family=True), "Malware")
    extension = stix["extensions"]["extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba"]
    assert extension["type"] == "Malware"
    assert json.loads(json.dumps(stix))["type"] == "malware"


async def test_a_silent_stream_is_abandoned_and_reopened(tmp_path: Path) -> None:
    """No frame (not even a heartbeat) within the read timeout → reconnect, nothing lost."""
    app = create_app(token=TOKEN, heartbeat_interval=30)
    async with serve_app(app) as url:
        await add(url, scenario_events(3))
        beat = opencti_beat(tmp_path, url, opencti_read_timeout=0.5)
        async with run_beat(beat) as base:
            await eventually(lambda: beat.metrics.reconnects._value.get() >= 2, what="reconnects")
            await add(url, scenario_events(2, seed=4))
            await eventually(lambda: beat.log.head == 5, what="all five")
            messages = await read_sse(f"{base}/events?last_event_id=0", count=5)
    assert len({m.json()["id"] for m in messages}) == 5


async def test_threat_feed_reaches_kafka_by_channel(
    tmp_path: Path, emulator: Emulator, kafka: KafkaBroker
) -> None:
    url = emulator.url
    scenario = Scenario(seed=21)
    indicators = [scenario.indicator()[0] for _ in range(5)]
    await add(url, [{"kind": "create", "data": stream_event("create", i, "x")} for i in indicators])
    beat = opencti_beat(tmp_path, url, kafka_bootstrap=kafka.bootstrap, kafka_idempotence=False)
    async with run_beat(beat):
        records = await consume(kafka.bootstrap, "beats.opencti.indicators", count=5)
    assert {r.key.decode() for r in records} == {i["id"] for i in indicators}
    levels = {i["id"]: STANDARD_TLP_IDS[i["object_marking_refs"][0]] for i in indicators}
    assert {r.key.decode(): json.loads(r.value)["tlp"] for r in records} == levels


async def test_recover_sends_current_state_first_then_tails(
    tmp_path: Path, emulator: Emulator
) -> None:
    url = emulator.url
    scenario = Scenario(seed=31)
    first = [scenario.create() for _ in range(4)]
    deleted = first[0]["data"]
    history = [*first, stream_event("delete", deleted, "x", {"deletions": [deleted]})]
    await add(url, [{"kind": e["type"], "data": e} for e in history])
    beat = opencti_beat(tmp_path, url, stream_id="live", opencti_recover=True)
    live_ids = {e["data"]["id"] for e in first[1:]}
    async with run_beat(beat) as base:

        async def recovered() -> list[dict[str, Any]]:
            messages = await read_sse(f"{base}/events?last_event_id=0", count=beat.log.head)
            return [m.json()["data"] for m in messages]

        async def all_recovered() -> bool:
            found = await recovered() if beat.log.head else []
            return live_ids <= {d["stix"]["id"] for d in found}

        await eventually(all_recovered, what="the three live objects")
        extra = scenario.create()
        await add(url, [{"kind": "create", "data": extra}])

        async def tailed() -> bool:
            return extra["data"]["id"] in {d["stix"]["id"] for d in await recovered()}

        await eventually(tailed, what="the event after the recover date")
        data = await recovered()
    by_id = {d["stix"]["id"]: d for d in data}
    assert all(by_id[i]["origin_referer"] == "init" for i in live_ids)
    assert deleted["id"] not in by_id
    assert {d["kind"] for d in data} == {"create"}
    assert by_id[extra["data"]["id"]]["origin_referer"] == "emulator"
    # markings and the author came along as dependencies, so the TLP levels are known
    assert any(d["stix"]["type"] == "marking-definition" for d in data)


async def test_a_stream_trimmed_past_the_saved_position_is_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(token=TOKEN, heartbeat_interval=0.2, trimming=10)
    async with serve_app(app) as url:
        await add(url, scenario_events(10, seed=11))
        first = opencti_beat(tmp_path, url)
        async with run_beat(first):
            await eventually(lambda: first.log.head == 10, what="the first 10")
        await add(url, scenario_events(15, seed=12))  # 5 of these are trimmed before it is back
        second = opencti_beat(tmp_path, url, opencti_start=None)
        async with run_beat(second):
            await eventually(lambda: second.log.head == 20, what="what the stream still holds")
    trimmed = second.metrics.source_errors.labels("trimmed")._value.get()
    assert trimmed == 1
    assert any("trimmed" in r.message for r in caplog.records if r.levelname == "WARNING")
