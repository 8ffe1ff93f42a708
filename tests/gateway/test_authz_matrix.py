"""The authorisation matrix, end to end: a real OpenCTI emulator, the OpenCTI beat and two
gateways (one replaying from its ring, one with no ring, so replays come from the beat), one
stack for the module. Every stream route x token kind (none, unknown, whole beat, channel,
TLP ceilings clear…red, dead-letter scope, admin, metrics) x mode (live before and after a beat
restart, replay from the ring, replay from the beat, filtered) x event kind (each TLP, update
with a red previous version, merge with a red source, deletion, custom and unknown markings,
PAP, dead letters) is compared with the model in :mod:`tests.gateway.authz`: exactly the events
it may see, each with the TLP it must carry, and never red content below a red ceiling.
Then the gateway's other pages per token, unknown channels, bounded filters, token conflicts
and the stream caps."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio
from httpx_sse import aconnect_sse
from hypothesis import given, note, settings
from hypothesis import strategies as st

from beats.opencti.emulator import create_app
from beats.opencti.service import build
from beats.opencti.settings import OpenctiSettings
from beats.opencti.stix import TLP_LEVELS
from common.service import Beat
from gateway.service import Gateway
from tests.gateway.authz import ROUTES, SECRET, TOKENS, Token, World, expected, route_channels, sees
from tests.gateway.support import gateway_settings, run_gateway
from tests.opencti.conftest import TOKEN as UPSTREAM_TOKEN
from tests.support import eventually, free_port, fuzz_examples, read_sse, run_beat, serve_app

pytestmark = pytest.mark.asyncio(loop_scope="module")
NOBODY = Token("none", ())
STRANGER = Token("unknown", ("*",))
EVERYONE = [NOBODY, STRANGER, *TOKENS]
FUZZ_TOKENS = [
    Token(f"fuzz-{n}-{level}", scopes, level)
    for n, scopes in enumerate(
        [
            ("opencti",),
            ("opencti:indicators",),
            ("opencti:deadletter",),
            ("*",),
            ("opencti:indicators", "opencti:deadletter"),
            ("opencti:entities",),
        ]
    )
    for level in (*TLP_LEVELS, None)
]
FILTER = "any.exact.tlp=red&any.exact.type=beats.opencti.deadletter&any.exact.subject={}"


@dataclass
class Read:
    status: int
    events: list[dict[str, Any]] = field(default_factory=list)
    text: str = ""


@dataclass
class Stack:
    world: World
    beat: Beat
    beat_base: str
    ring: tuple[Gateway, str]
    replay: tuple[Gateway, str]
    live: dict[tuple[int, str, str], Read] = field(default_factory=dict)
    heads: list[int] = field(default_factory=list)

    async def events(self) -> list[dict[str, Any]]:
        """Every event the beat committed, from its own port (the ground truth)."""
        messages = await read_sse(f"{self.beat_base}/events?last_event_id=0", count=self.heads[-1])
        return [m.json() for m in messages]


def _headers(token: Token) -> dict[str, str]:
    if token is NOBODY:
        return {}
    if token is STRANGER:
        return {"Authorization": "Bearer not-a-token"}
    return {"Authorization": f"Bearer {token.value}"}


Final = Callable[[dict[str, Any]], bool]


def finals(world: World, phase: int, token: Token, route: str) -> list[Final]:
    """The final events of a read that the token sees (the phase's clear sentinel is the last
    event of the stream, its second dead letter the last of the dead-letter channel): the read
    stops once it has them all; with none, it stops when the others are done."""
    channels = route_channels(token, route)
    if token in (NOBODY, STRANGER) or channels is None:
        return []
    sentinel = world.sentinels[phase - 1]
    found: list[Final] = []
    if channels != {"deadletter"}:
        found.append(lambda e: e.get("subject") == sentinel)
    if "deadletter" in channels and sees(token, {"type": "x.deadletter", "tlp": "red"}):
        found.append(lambda e: f"dead letter {phase}" in json.dumps(e.get("data")))
    return found


async def read(
    url: str,
    token: Token,
    *,
    stop: list[Final],
    done: asyncio.Event,
    connected: asyncio.Event | None = None,
    params: str = "",
) -> Read:
    """One client: its status, and its events until each of ``stop`` held for one of them or
    ``done`` is set."""
    outcome = Read(0)
    async with (
        httpx.AsyncClient(timeout=60) as client,
        aconnect_sse(client, "GET", url + params, headers=_headers(token)) as source,
    ):
        outcome.status = source.response.status_code
        if connected is not None:
            connected.set()
        if outcome.status != 200:
            outcome.text = (await source.response.aread()).decode()
            return outcome

        async def consume() -> None:
            async for sse in source.aiter_sse():
                if sse.data:
                    outcome.text += sse.data
                    outcome.events.append(json.loads(sse.data))
                    if stop and all(any(f(e) for e in outcome.events) for f in stop):
                        return

        consumer = asyncio.create_task(consume())
        waiter = asyncio.create_task(done.wait())
        await asyncio.wait({consumer, waiter}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        for task in (consumer, waiter):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return outcome


async def read_all(
    base: str, world: World, phase: int, *, query: str = "", live: Callable[[], Any] | None = None
) -> dict[tuple[str, str], Read]:
    """Every token on every route of one gateway. ``live``: connect everyone first, then call
    it (it appends the phase's events)."""
    done = asyncio.Event()
    tasks, gates = {}, []
    for token in EVERYONE:
        for route, path in ROUTES.items():
            gate = asyncio.Event()
            gates.append(gate)
            stop = finals(world, phase, token, route)
            coroutine = read(f"{base}{path}", token, stop=stop, done=done, connected=gate,
                             params=query)  # fmt: skip
            tasks[(token.name, route)] = asyncio.create_task(coroutine)
    if live is not None:
        await asyncio.wait_for(asyncio.gather(*(g.wait() for g in gates)), 30)
        await live()
    finishing = [t for (n, r), t in tasks.items() if finals(world, phase, _token(n), r)]
    await asyncio.wait_for(asyncio.gather(*finishing), 90)
    await asyncio.sleep(0.5)  # reads that see no final event: anything they get comes by now
    done.set()
    return {key: await task for key, task in tasks.items()}


def _token(name: str) -> Token:
    return next(t for t in [*EVERYONE, *FUZZ_TOKENS] if t.name == name)


def opencti_settings(tmp: Path, url: str, port: int) -> OpenctiSettings:
    return OpenctiSettings(
        port=port,
        data_dir=tmp / "opencti",
        opencti_url=url,
        opencti_token=UPSTREAM_TOKEN,
        opencti_start="0",
    )


async def _add(url: str, frames: list[dict[str, Any]]) -> None:
    async with httpx.AsyncClient() as client:
        (await client.post(f"{url}/admin/events", json=frames)).raise_for_status()


async def _live_phase(
    stack: Stack, url: str, phase: int, beat: Beat, upstreams: Callable[[], bool]
) -> None:
    batch = stack.world.batch(phase)
    head = beat.log.head

    async def append() -> None:
        await eventually(upstreams, timeout=30, what="the gateway's upstreams connected")
        await _add(url, batch)
        await eventually(lambda: beat.log.head >= head + len(batch), timeout=30, what="commits")

    reads = await read_all(stack.ring[1], stack.world, phase, live=append)
    stack.live.update({(phase, *key): outcome for key, outcome in reads.items()})
    stack.heads.append(beat.log.head)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("authz")
    tokens = tmp / "tokens.json"
    entries = [t.entry() for t in [*TOKENS, *FUZZ_TOKENS]]
    tokens.write_text(json.dumps({"tokens": entries}))
    app = create_app(token=UPSTREAM_TOKEN, heartbeat_interval=0.2, graphql=False)
    port = free_port()
    async with contextlib.AsyncExitStack() as running:
        url = await running.enter_async_context(serve_app(app))
        first = build(opencti_settings(tmp, url, port))
        beat_stack = contextlib.AsyncExitStack()
        beat_base = await beat_stack.enter_async_context(run_beat(first))
        beats: dict[str, Beat | str] = {"opencti": beat_base}
        ring = await running.enter_async_context(
            run_gateway(
                gateway_settings(
                    beats, tokens_file=tokens, upstream_linger=600, max_streams_per_token=500
                )
            )
        )
        replay = await running.enter_async_context(run_gateway(gateway_settings(
            beats, tokens_file=tokens, ring_size=0, max_streams_per_token=500)))  # fmt: skip
        stack = Stack(World(), first, beat_base, ring, replay)

        def upstreams() -> bool:
            opened = ring[0].pool.all()
            return len(opened) == 3 and all(u.connected for u in opened)

        await _live_phase(stack, url, 1, first, upstreams)
        await beat_stack.aclose()  # the beat restarts: markings it learned must be remembered
        second = build(opencti_settings(tmp, url, port))
        async with run_beat(second):
            stack.beat = second
            await _live_phase(stack, url, 2, second, upstreams)
            yield stack


def check(token: Token, route: str, outcome: Read, events: list[dict[str, Any]], world: World,
          keep: Callable[[dict[str, Any]], bool] = lambda e: True) -> None:  # fmt: skip
    """One client's outcome against the model (``keep``: the request's filter)."""
    where = f"{token.name} on {route}"
    ids = expected(token, route, [e for e in events if keep(e)])
    if token in (NOBODY, STRANGER):
        assert outcome.status == 401, where
        return
    if ids is None:
        assert outcome.status == 403, where
        return
    assert outcome.status == 200, f"{where}: {outcome.status} {outcome.text[:200]}"
    received = [e["id"] for e in outcome.events]
    assert len(received) == len(set(received)), f"{where}: duplicates"
    assert sorted(received) == sorted(ids), f"{where}: {len(received)} events, {len(ids)} due"
    for event in outcome.events:
        assert event.get("tlp") == truth(world, event), where
        if token.tlp_max not in (None, "red") and not event["type"].endswith(".deadletter"):
            assert SECRET not in json.dumps(event), f"{where}: red content"


def truth(world: World, event: dict[str, Any]) -> str:
    return "red" if event["type"].endswith(".deadletter") else world.tlp[event["subject"]]


async def test_the_beat_marks_every_event_as_the_model_says(stack: Stack) -> None:
    events = await stack.events()
    assert len(events) == stack.heads[-1] == 29  # 20 before the restart, 9 after
    assert all(e.get("tlp") == truth(stack.world, e) for e in events)
    assert {truth(stack.world, e) for e in events} == set(TLP_LEVELS)
    dead = [e for e in events if e["type"] == "beats.opencti.deadletter"]
    assert len(dead) == 4 and all(SECRET in json.dumps(e["data"]) for e in dead)


@pytest.mark.parametrize("phase", [1, 2], ids=["live-before-restart", "live-after-restart"])
async def test_live(stack: Stack, phase: int) -> None:
    events = await stack.events()
    low = 0 if phase == 1 else stack.heads[0]
    batch = [e for e in events if low < e["sequence"] <= stack.heads[phase - 1]]
    for token in EVERYONE:
        for route in ROUTES:
            check(token, route, stack.live[(phase, token.name, route)], batch, stack.world)


@pytest.mark.parametrize("mode", ["ring", "beat", "filtered"])
async def test_replay(stack: Stack, mode: str) -> None:
    events = await stack.events()
    gateway, base = stack.replay if mode == "beat" else stack.ring
    before = {s: gateway.metrics.replays.labels(s)._value.get() for s in ("ring", "beat")}
    keep: Callable[[dict[str, Any]], bool] = lambda e: True  # noqa: E731
    query = "?last_event_id=0"
    if mode == "filtered":
        sentinel = stack.world.sentinels[-1]
        query += "&" + FILTER.format(sentinel)
        keep = lambda e: (  # noqa: E731
            e.get("tlp") == "red" or e["type"].endswith(".deadletter") or e["subject"] == sentinel
        )
    reads = await read_all(base, stack.world, 2, query=query)
    for (name, route), outcome in reads.items():
        check(_token(name), route, outcome, events, stack.world, keep)
    after = {s: gateway.metrics.replays.labels(s)._value.get() for s in ("ring", "beat")}
    used = "beat" if mode == "beat" else "ring"
    assert after[used] > before[used]
    if mode != "beat":
        assert after["beat"] == before["beat"]  # every replay came from memory


async def test_pages_show_each_token_only_what_it_may_see(stack: Stack) -> None:
    gateway, base = stack.ring
    by_name = {t.name: t for t in TOKENS}
    async with httpx.AsyncClient(base_url=base) as http:

        async def get(path: str, token: Token) -> httpx.Response:
            return await http.get(path, headers=_headers(token))

        for path in ("/beats", "/metrics", "/docs", "/redoc", "/openapi.json", "/asyncapi.json"):
            assert (await get(path, NOBODY)).status_code == 401, path
            assert (await get(path, STRANGER)).status_code == 401, path
        assert (await get("/", NOBODY)).status_code == 200  # the dashboard page holds no data
        for name, status in (("admin", 200), ("metrics", 200), ("beat", 403), ("beat-red", 403)):
            assert (await get("/metrics", by_name[name])).status_code == status, name
        for token in TOKENS:
            assert (await get("/docs", token)).status_code == 200
            assert (await get("/redoc", token)).status_code == 200
            assert (await get("/openapi.json", token)).status_code == 200
            assert (await get("/asyncapi.json", token)).status_code == 200
        admin = (await get("/beats", by_name["admin"])).json()["beats"][0]
        assert admin["url"] == stack.beat_base and "detail" in admin["checks"]["opencti"]
        whole = (await get("/beats", by_name["beat-green"])).json()["beats"][0]
        assert "url" not in whole and "error" not in whole
        assert whole["checks"]["opencti"] == {"ok": True} and whole["log"]["head"]
        channel = (await get("/beats", by_name["channel-green"])).json()["beats"][0]
        assert set(channel["rates"]) <= {"indicators"} and "log" not in channel
        assert {s["stream"] for s in channel["gateway"]} == {"opencti/indicators"}
        assert {s["stream"] for s in admin["gateway"]} == {
            "opencti", "opencti/indicators", "opencti/deadletter"}  # fmt: skip
        assert (await get("/beats", by_name["metrics"])).json() == {"beats": []}
        assert stack.beat_base not in (await http.get("/readyz")).text
    metrics = gateway.metrics.render().decode()
    assert 'beats_gateway_filtered_events_total{reason="tlp"}' in metrics


async def test_unknown_channels_filters_and_conflicting_tokens(stack: Stack) -> None:
    gateway, base = stack.ring
    admin = {"Authorization": f"Bearer {TOKENS[0].value}"}
    opened = gateway.pool.count
    async with httpx.AsyncClient(base_url=base) as http:
        for name in ("bogus", "x" * 200, "deadletter2"):
            response = await http.get(f"/streams/opencti/{name}", headers=admin)
            assert response.status_code == 404, name
        assert (await http.get(f"{stack.beat_base}/events/bogus")).status_code == 404
        bomb = await http.get("/streams/opencti", params={"filter": "[" * 3000}, headers=admin)
        assert bomb.status_code == 400 and "nested deeper" in bomb.text
        huge = await http.get("/streams/opencti", params={"exact.type": "x" * 9000}, headers=admin)
        assert huge.status_code == 400 and "exceed" in huge.text
        both = await http.get(
            "/streams/opencti", params={"access_token": TOKENS[1].value}, headers=admin
        )
        assert both.status_code == 400 and both.json()["error"] == "invalid_request"
    assert gateway.pool.count == opened  # no upstream was opened for any of them
    assert gateway.pool.get(("opencti", "bogus")) is None


async def test_streams_are_capped_per_token_and_in_total(stack: Stack, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [t.entry() for t in TOKENS]}))
    beats: dict[str, Beat | str] = {"opencti": stack.beat_base}
    settings = gateway_settings(beats, tokens_file=tokens, max_streams_per_token=2, max_upstreams=2)
    admin, beat = TOKENS[0], TOKENS[1]
    async with run_gateway(settings) as (gateway, base):
        done = asyncio.Event()
        holders = [
            asyncio.create_task(
                read(f"{base}{path}", admin, stop=[lambda e: False], done=done, connected=gate)
            )
            for path, gate in (
                ("/streams/opencti", asyncio.Event()),
                ("/streams/opencti/indicators", asyncio.Event()),
            )
        ]
        await eventually(lambda: len(gateway.clients) == 2, what="two streams")
        async with httpx.AsyncClient(base_url=base) as http:
            third = await http.get("/streams/opencti", headers=_headers(admin))
            other = await http.get("/streams/opencti/reports", headers=_headers(beat))
            done.set()
            shared = await read(f"{base}/streams/opencti", beat, stop=[], done=done)
        await asyncio.gather(*holders)
    assert third.status_code == 503 and "per-token" in third.text and third.headers["retry-after"]
    assert other.status_code == 503 and "--max-upstreams" in other.text
    assert shared.status == 200  # an open upstream is shared: it needs no new one
    refused = gateway.metrics.refused
    assert refused.labels("token_streams")._value.get() == 1
    assert refused.labels("upstreams")._value.get() == 1


@pytest.mark.fuzz
@settings(max_examples=fuzz_examples(10), deadline=None)
@given(
    token=st.sampled_from(FUZZ_TOKENS),
    route=st.sampled_from(sorted(ROUTES)),
    conditions=st.lists(
        st.sampled_from(
            [f"exact.tlp={level}" for level in TLP_LEVELS]
            + [
                "exact.type=beats.opencti.deadletter",
                "exact.stixtype=indicator",
                "prefix.type=beats.opencti.",
                "exact.stixtype=malware",
            ]
        ),
        max_size=3,
    ),
    negate=st.booleans(),
    ring=st.booleans(),
)
async def test_any_token_route_and_filter_sees_exactly_what_the_model_allows(
    stack: Stack, token: Token, route: str, conditions: list[str], negate: bool, ring: bool
) -> None:
    """Property: for any token (scopes x ceiling), route, filter and replay source, the
    gateway sends exactly the model's events, never red content below a red ceiling."""
    events = await stack.events()
    sentinel = stack.world.sentinels[-1]
    prefix = "any.not." if negate else "any."
    params = [(prefix + c.split("=")[0], c.split("=")[1]) for c in conditions]
    params.append(("any.exact.subject", sentinel))
    query = "?last_event_id=0&" + urlencode(params)  # amber+strict: "+" must be escaped

    note(f"{token.name} {route} {'ring' if ring else 'beat'} {query}")

    def keep(event: dict[str, Any]) -> bool:
        matched = [_matches(c, event) != negate for c in conditions]
        return any(matched) or event.get("subject") == sentinel

    base = stack.ring[1] if ring else stack.replay[1]
    done = asyncio.Event()
    due = set(expected(token, route, [e for e in events if keep(e)]) or [])
    stop = [f for f in finals(stack.world, 2, token, route) if any(f(e) for e in events
            if e["id"] in due)]  # fmt: skip
    reading = asyncio.create_task(
        read(f"{base}{ROUTES[route]}", token, stop=stop, done=done, params=query)
    )
    if not stop:  # no final event to stop on: what comes, comes by then
        await asyncio.sleep(0.5)
        done.set()
    outcome = await asyncio.wait_for(reading, 60)
    check(token, route, outcome, events, stack.world, keep)


def _matches(condition: str, event: dict[str, Any]) -> bool:
    dialect_attribute, _, value = condition.partition("=")
    dialect, _, attribute = dialect_attribute.partition(".")
    found = event.get(attribute)
    if not isinstance(found, str):
        return False
    return found == value if dialect == "exact" else found.startswith(value)
