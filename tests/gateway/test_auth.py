"""Auth: tokens file, scopes, TLP ceiling, RFC 6750 errors, no token in the logs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.envelope import CloudEvent, new_event
from gateway.auth import Authenticator, AuthError, load_tokens, tlp_allows
from tests.gateway.support import beat_named, gateway_settings, run_gateway
from tests.support import make_events, read_sse, run_beat

ADMIN = "admin-secret-0123456789"
CHANNEL = "channel-secret-abcdef"
AMBER = "amber-secret-xyz"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def write_tokens(path: Path) -> Path:
    path.write_text(
        f"""
tokens:
  - name: admin
    sha256: {sha(ADMIN)}
    scopes: ["*"]
  - name: channel-reader
    token: {CHANNEL}
    scopes: ["hivemq:c"]
  - name: analyst
    sha256: {sha(AMBER)}
    scopes: ["opencti"]
    tlp_max: amber
"""
    )
    return path


def test_tokens_file_yaml_and_json(tmp_path: Path) -> None:
    entries = load_tokens(write_tokens(tmp_path / "tokens.yaml"))
    assert [e.name for e in entries] == ["admin", "channel-reader", "analyst"]
    as_json = tmp_path / "tokens.json"
    as_json.write_text(json.dumps({"tokens": [{"name": "a", "token": "t", "scopes": ["x"]}]}))
    assert load_tokens(as_json)[0].scopes == ["x"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "a", "scopes": ["x"]}, "exactly one of sha256 and token"),
        ({"name": "a", "token": "t", "sha256": "0" * 64, "scopes": ["x"]}, "exactly one"),
        ({"name": "a", "sha256": "abc", "scopes": ["x"]}, "sha256"),
        ({"name": "a", "token": "leaky-secret", "scopes": []}, "scopes"),
        ({"name": "a", "token": "leaky-secret", "scopes": ["x"], "tlp_max": "pink"}, "tlp_max"),
    ],
)
def test_bad_tokens_file_is_refused_without_showing_secrets(
    tmp_path: Path, entry: dict[str, object], message: str
) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [entry]}))
    with pytest.raises(ValueError, match=message) as caught:
        load_tokens(path)
    assert "leaky-secret" not in str(caught.value)


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    entry = {"name": "a", "token": "t", "scopes": ["x"]}
    path.write_text(json.dumps({"tokens": [entry, {**entry, "token": "u"}]}))
    with pytest.raises(ValueError, match="unique"):
        load_tokens(path)


def test_tlp_ceiling_order() -> None:
    assert tlp_allows("amber", "clear") and tlp_allows("amber", "white")
    assert tlp_allows("amber", "green") and tlp_allows("amber", "amber")
    assert not tlp_allows("amber", "amber+strict") and not tlp_allows("amber", "red")
    assert tlp_allows("red", "unknown-marking")  # an unknown marking counts as red
    assert not tlp_allows("clear", "something-odd")
    assert tlp_allows(None, "red") and tlp_allows("clear", None)


def test_authenticator_sources_and_scopes(tmp_path: Path) -> None:
    auth = Authenticator(load_tokens(write_tokens(tmp_path / "t.yaml")))
    assert auth.presented([f"Bearer {ADMIN}"], [], []) == ADMIN
    assert auth.presented([], ["q"], []) == "q"
    assert auth.presented([], [], ["theme=dark; access_token=c"]) == "c"
    assert auth.presented([], [], ['access_token="c"']) == "c"
    assert auth.presented(["Basic xyz"], [], []) is None
    # the same token in several places is one presentation; two tokens are refused
    assert auth.presented(["Bearer t"], ["t"], ["access_token=t"]) == "t"
    conflicts: list[tuple[list[str], list[str], list[str]]] = [
        (["Bearer a", "Bearer b"], [], []),
        ([], ["a", "b"], []),
        ([], [], ["access_token=a", "access_token=b"]),
        (["Bearer a"], ["b"], []),
        ([], ["a"], ["access_token=b"]),
    ]
    for conflicting in conflicts:
        with pytest.raises(AuthError) as refused:
            auth.presented(*conflicting)
        assert refused.value.status == 400 and refused.value.error == "invalid_request"
    reader = auth.authenticate(CHANNEL)
    assert reader.name == "channel-reader"
    assert reader.allows("hivemq", "c") and not reader.allows("hivemq")
    assert not reader.allows("hivemq", "d") and reader.channels("hivemq") == ["c"]
    with pytest.raises(AuthError) as missing:
        auth.authenticate(None)
    assert missing.value.status == 401 and missing.value.error is None
    with pytest.raises(AuthError) as wrong:
        auth.authenticate("nope")
    assert wrong.value.error == "invalid_token"
    assert Authenticator(None).authenticate(None).allows("anything")


def tlp_events() -> list[CloudEvent]:
    markings: list[dict[str, Any]] = [
        {} if tlp is None else {"tlp": tlp}
        for tlp in ["green", "red", None, "amber+strict", "amber", "clear"]
    ]
    return [
        new_event(
            beat="opencti",
            type="beats.opencti.create",
            source="opencti://",
            channel="indicators",
            partitionkey=f"indicator--{n}",
            subject=f"indicator--{n}",
            data={"n": n},
            **marking,
        )
        for n, marking in enumerate(markings)
    ]


async def test_auth_matrix_over_http(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for client_side in ("httpx", "httpcore"):  # the test's own client logs the URLs it asks
        caplog.set_level(logging.WARNING, logger=client_side)
    caplog.set_level(logging.DEBUG)  # last: it also sets the capturing handler's level
    hivemq, opencti = beat_named(tmp_path, "hivemq"), beat_named(tmp_path, "opencti")
    tokens = write_tokens(tmp_path / "tokens.yaml")
    async with run_beat(hivemq), run_beat(opencti):
        await hivemq.pipeline.commit(make_events(3, channel="c") + make_events(2, channel="d"))
        await opencti.pipeline.commit(tlp_events())
        settings = gateway_settings({"hivemq": hivemq, "opencti": opencti}, tokens_file=tokens)
        async with run_gateway(settings) as (gateway, base), httpx.AsyncClient() as http:
            await _refusals(http, base)
            await _grants(http, base)
            failures = gateway.metrics.render().decode()
    assert 'beats_gateway_auth_failures_total{reason="missing"} 2.0' in failures
    assert 'beats_gateway_auth_failures_total{reason="invalid"} 1.0' in failures
    assert 'beats_gateway_auth_failures_total{reason="scope"} 3.0' in failures
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for secret in (ADMIN, CHANNEL, AMBER, sha(ADMIN)):
        assert secret not in logged
    assert "channel-reader" in logged


async def _refusals(http: httpx.AsyncClient, base: str) -> None:
    response = await http.get(f"{base}/streams/hivemq")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="works-beats"'
    assert response.json()["error"] == "unauthorized"
    assert (await http.get(f"{base}/beats")).status_code == 401
    response = await http.get(f"{base}/streams/hivemq", headers={"Authorization": "Bearer bad"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert response.json()["error"] == "invalid_token"
    reader = {"Authorization": f"Bearer {CHANNEL}"}
    for path in ("/streams/hivemq", "/streams/hivemq/d", "/streams/opencti"):
        response = await http.get(base + path, headers=reader)
        assert response.status_code == 403, path
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
        assert response.json()["error"] == "insufficient_scope"


async def _grants(http: httpx.AsyncClient, base: str) -> None:
    by_header = await read_sse(
        f"{base}/streams/hivemq/c?last_event_id=0",
        count=3,
        headers={"Authorization": f"Bearer {CHANNEL}"},
    )
    assert [m.id for m in by_header] == ["1", "2", "3"]
    merged = await read_sse(f"{base}/streams?last_event_id=0&access_token={CHANNEL}", count=3)
    assert [m.id for m in merged] == ["hivemq/c=1", "hivemq/c=2", "hivemq/c=3"]
    by_cookie = await read_sse(
        f"{base}/streams/hivemq?last_event_id=3",
        count=2,
        headers={"Cookie": f"access_token={ADMIN}"},
    )
    assert [m.id for m in by_cookie] == ["4", "5"]
    beats = (await http.get(f"{base}/beats", headers={"Authorization": f"Bearer {CHANNEL}"})).json()
    assert [b["name"] for b in beats["beats"]] == ["hivemq"]
    # the analyst's ceiling is amber: red and amber+strict are hidden, and so is an OpenCTI
    # event without tlp (it counts as red)
    seen = await read_sse(f"{base}/streams/opencti?last_event_id=0&access_token={AMBER}", count=3)
    assert [m.json().get("tlp") for m in seen] == ["green", "amber", "clear"]
    everything = await read_sse(
        f"{base}/streams/opencti?last_event_id=0&access_token={ADMIN}", count=6
    )
    assert len(everything) == 6


async def test_slowloris_connections_are_closed_and_counted(tmp_path: Path) -> None:
    """Connections that trickle a request head never reach auth: the server closes them."""
    beat = beat_named(tmp_path, "a")
    settings = gateway_settings({"a": beat}, http_head_timeout=0.5)

    def trickle() -> bytes:
        with socket.create_connection(("127.0.0.1", settings.port), timeout=5) as sock:
            for piece in (b"GET /streams HTTP/1.1\r\n", b"Host: x\r\n", b"Accept: te"):
                sock.sendall(piece)
                time.sleep(0.2)
            return sock.recv(1024)

    async with run_beat(beat), run_gateway(settings) as (gateway, base):
        answers = await asyncio.gather(*(asyncio.to_thread(trickle) for _ in range(5)))
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{base}/readyz")).status_code == 200
    assert answers == [b""] * 5
    assert gateway.metrics.http_head_timeouts._value.get() == 5
