"""The OpenCTI stream read with a bound on every frame (beats.opencti.reader): lines split as
SSE says whatever the chunking, an over-long line cut and not held in memory, and on a running
beat such a frame dead-lettered (red) while the stream goes on."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from beats.opencti.reader import _lines
from tests.opencti.conftest import Emulator
from tests.opencti.test_opencti_beat import add, opencti_beat, scenario_events
from tests.support import fuzz_examples, read_sse, run_beat


async def _from(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def lines(chunks: list[bytes], max_line: int = 1000) -> list[tuple[bytes, int]]:
    return [(bytes(line.kept), line.size) async for line in _lines(_from(chunks), max_line)]


async def test_line_ends_of_every_kind_even_split_across_chunks() -> None:
    assert await lines([b"a\r", b"\nb\rc\n", b"\n", b"d"]) == [
        (b"a", 1), (b"b", 1), (b"c", 1), (b"", 0), (b"d", 1)
    ]  # fmt: skip


async def test_a_long_line_is_cut_to_64_kib_and_its_size_told() -> None:
    body = b"x" * 300_000
    chunks = [body[i : i + 7000] for i in range(0, len(body), 7000)] + [b"\nnext\n"]
    (cut, size), after = await lines(chunks, max_line=100_000)
    assert size == 300_000 and cut == b"x" * 65536
    assert after == (b"next", 4)


@settings(max_examples=fuzz_examples(200), deadline=None)
@given(
    text=st.lists(st.sampled_from([b"ab", b"\n", b"\r", b"\r\n", b"data: x", b":"]), max_size=30),
    cuts=st.lists(st.integers(0, 60), max_size=8),
)
async def test_any_chunking_gives_the_lines_sse_defines(text: list[bytes], cuts: list[int]) -> None:
    raw = b"".join(text)
    bounds = sorted({0, len(raw), *(c for c in cuts if c < len(raw))})
    chunks = [raw[a:b] for a, b in itertools.pairwise(bounds)]
    expected = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if expected and expected[-1] == b"":
        expected.pop()
    assert [line for line, _ in await lines(chunks)] == expected


async def test_an_oversized_frame_is_dead_lettered_red_and_the_stream_goes_on(
    tmp_path: Path, emulator: Emulator
) -> None:
    await add(emulator.url, scenario_events(2, seed=5))
    await emulator.api.append_raw("create", '{"data": "' + "y" * (3 * 1024 * 1024) + '"}')
    await add(emulator.url, scenario_events(2, seed=6))
    beat = opencti_beat(tmp_path, emulator.url, opencti_max_frame_bytes=1024 * 1024)
    async with run_beat(beat) as base:
        messages = await read_sse(f"{base}/events?last_event_id=0", count=5, timeout=20)
    kinds = [m.event for m in messages]
    assert kinds.count("beats.opencti.deadletter") == 1 and len(kinds) == 5
    dead = next(m.json() for m in messages if m.event == "beats.opencti.deadletter")
    assert dead["tlp"] == "red" and "3145740 bytes" in dead["data"]["reason"]
    data = '{"data": "' + "y" * (3 * 1024 * 1024) + '"}'
    assert dead["data"]["size"] == len(data) == 3145740
    assert dead["data"]["sha256"] == hashlib.sha256(data.encode()).hexdigest()
    assert dead["data"]["truncated"] is True and data.startswith(dead["data"]["raw"])
