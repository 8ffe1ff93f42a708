"""The Ditto upstream corpus (``tests/ditto/corpus``) through the emulator's WebSocket to a
running beat: every frame goes out on the beat's session exactly as written (Ditto 3.x twin
events, enriched events, live messages that share correlation-ids, errors, live events and
commands), garbage frames in between, and every fact must reach the processed view on SSE. A
frame sent again is stored once; different frames sharing a correlation-id are all kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.corpus import check_facts, load_corpus
from tests.ditto.test_ditto_beat import api, ditto, ditto_beat, subscribed  # noqa: F401
from tests.support import eventually, read_sse, run_beat

CASES = load_corpus(Path(__file__).parent)
GARBAGE = [
    b"{broken",
    b'{"topic": "org.x/y/things/twin/events/exploded", "path": "/"}',
    b'{"topic": 5}',
]


async def test_every_corpus_file_reaches_the_processed_view(
    tmp_path: Path,
    ditto: tuple[str, Any],  # noqa: F811
) -> None:
    url, _ = ditto
    beat = ditto_beat(tmp_path, url)
    expected = sum(len(c.facts) for c in CASES)
    async with run_beat(beat) as base:
        await subscribed(beat)
        for n, case in enumerate(CASES):
            await api(url, "POST", "/admin/raw", content=GARBAGE[n % len(GARBAGE)])
            for frame in case.spec["frames"]:
                await api(url, "POST", "/admin/raw", content=json.dumps(frame).encode())
        twin_and_live = await read_sse(
            f"{base}/events?last_event_id=0", count=expected + len(CASES)
        )
        # a genuine redelivery: a frame seen before, once more
        again = CASES[0].spec["frames"][0]
        await api(url, "POST", "/admin/raw", content=json.dumps(again).encode())
        await eventually(lambda: beat.metrics.duplicates._value.get() >= 1, what="dedup")
    events = [m.json() for m in twin_and_live if m.event != "beats.ditto.deadletter"]
    dead = [m for m in twin_and_live if m.event == "beats.ditto.deadletter"]
    assert len(dead) == len(CASES)
    for case in CASES:
        mine, events = events[: len(case.facts)], events[len(case.facts) :]
        check_facts(case, mine)
        assert all(e["time"] for e in mine), case.name
    assert not events
    ids = [m.json()["id"] for m in twin_and_live]
    assert len(ids) == len(set(ids))
