"""/beats, /readyz, /metrics, /docs, CORS and the open-mode warning of the gateway."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from gateway.settings import GatewaySettings, parse_beats
from gateway.status import parse_metrics
from tests.gateway.support import beat_named, gateway_settings, run_gateway
from tests.support import eventually, free_port, make_events, read_sse, run_beat


def test_beat_option_parsing() -> None:
    assert parse_beats(["hivemq=http://127.0.0.1:8101/", "ditto=https://d:1"]) == {
        "hivemq": "http://127.0.0.1:8101",
        "ditto": "https://d:1",
    }
    for bad in (["Hive=http://x:1"], ["a=ftp://x"], ["a=http://x:1", "a=http://y:1"], ["a", "a"]):
        with pytest.raises(ValueError, match="--beat"):
            parse_beats(bad)
    settings = GatewaySettings(beat="a=http://x:1,b=http://y:2")
    assert settings.beats == {"a": "http://x:1", "b": "http://y:2"} and settings.port == 8080
    # a beat named alone is read from its Kafka topics, which needs --kafka-bootstrap
    assert parse_beats(["fiware"]) == {"fiware": None}
    with pytest.raises(ValueError, match="--kafka-bootstrap"):
        GatewaySettings(beat="a=http://x:1,fiware")
    mixed = GatewaySettings(beat="a=http://x:1,fiware", kafka_bootstrap="k:9092")
    assert mixed.url_beats == {"a": "http://x:1"} and mixed.kafka_beats == ["fiware"]


def test_parse_metrics_of_a_beat() -> None:
    text = (
        'beats_events_committed_total{channel="a"} 5.0\n'
        'beats_events_committed_total{channel="b"} 2.0\n'
        "beats_kafka_lag 3.0\nbeats_sse_subscribers 4.0\nbeats_other 1.0\n"
    )
    assert parse_metrics(text) == {
        "committed": {"a": 5.0, "b": 2.0},
        "kafka_lag": 3.0,
        "subscribers": 4.0,
    }


async def test_beats_status_readiness_and_metrics(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway")
    beat = beat_named(tmp_path, "test")
    down = f"http://127.0.0.1:{free_port()}"
    settings = gateway_settings({"test": beat, "gone": down}, cors_origins=["http://app.example"])
    async with (
        run_beat(beat),
        run_gateway(settings) as (_, base),
        httpx.AsyncClient(base_url=base) as http,
    ):

        async def polled() -> bool:  # the first poll of every beat has to happen first
            return (await http.get("/readyz")).status_code == 200

        await eventually(polled, what="the gateway's first poll")
        live = await http.get("/readyz")
        assert live.json()["beats"]["gone"]["reachable"] is False
        for first in range(0, 40, 10):
            await beat.pipeline.commit(make_events(10, start=first, channel="ch"))
        await read_sse(f"{base}/streams/test?last_event_id=0", count=40)

        async def counted() -> bool:
            report = {b["name"]: b for b in (await http.get("/beats")).json()["beats"]}
            return bool(report["test"]["events"] == 40 and report["test"]["subscribers"] == 1)

        await eventually(counted, what="the status of the beat")
        beats = {b["name"]: b for b in (await http.get("/beats")).json()["beats"]}
        test, gone = beats["test"], beats["gone"]
        assert test["reachable"] and test["ready"] and test["log"]["head"] == 40
        assert set(test["rates"]) <= {"ch"} and test["kafka"] is None
        assert test["gateway"][0]["stream"] == "test" and test["gateway"][0]["head"] == 40
        assert gone["reachable"] is False and gone["ready"] is False and gone["error"]
        metrics = (await http.get("/metrics")).text
        assert "beats_gateway_client_connections_total 1.0" in metrics
        for family in (
            "clients",
            "upstreams",
            "upstream_reconnects",
            "overflow_disconnects",
            "auth_failures",
            "filtered_events",
            "streams_rejected",
            "gap_signals",
        ):
            assert f"# TYPE beats_gateway_{family}" in metrics, family
        assert 'beats_gateway_replays_total{source="beat"}' in metrics
        openapi = (await http.get("/openapi.json")).json()
        assert {"/streams", "/streams/{beat}", "/streams/{beat}/{channel}", "/beats"} <= set(
            openapi["paths"]
        )
        assert "exact.<attr>" in openapi["paths"]["/streams"]["get"]["description"]
        assert (await http.get("/docs")).status_code == 200
        cors = await http.get("/beats", headers={"Origin": "http://app.example"})
        assert cors.headers["access-control-allow-origin"] == "http://app.example"
        other = await http.get("/beats", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    assert any("the gateway is OPEN" in r.getMessage() for r in caplog.records)


async def test_not_ready_when_no_beat_is(tmp_path: Path) -> None:
    settings = gateway_settings({"gone": f"http://127.0.0.1:{free_port()}"})
    async with run_gateway(settings) as (gateway, base), httpx.AsyncClient() as http:
        await eventually(lambda: gateway.poller.statuses["gone"].updated is not None)
        response = await http.get(f"{base}/readyz")
        assert response.status_code == 503 and response.json()["ready"] is False
