"""The OpenCTI upstream corpus (``tests/opencti/corpus``) through the emulator's live stream to a
running beat: create, update, delete and merge frames with their ``context`` (patches, sources,
cascaded deletions) and dependency creates sharing one stream id, unparseable frames in between;
every fact must reach the processed view on SSE."""

from __future__ import annotations

from pathlib import Path

from tests.corpus import check_facts, load_corpus
from tests.opencti.conftest import Emulator
from tests.opencti.test_opencti_beat import add, opencti_beat
from tests.support import read_sse, run_beat

CASES = load_corpus(Path(__file__).parent)


async def test_every_corpus_file_reaches_the_processed_view(
    tmp_path: Path, emulator: Emulator
) -> None:
    for n, case in enumerate(CASES):
        await add(emulator.url, [{"kind": "create", "raw": "{not json" + "}" * n}])
        shared = bool(case.spec.get("shared_id"))
        await add(emulator.url, case.spec["frames"], shared_id=shared)
    expected = sum(len(c.facts) for c in CASES)
    beat = opencti_beat(tmp_path, emulator.url)
    async with run_beat(beat) as base:
        messages = await read_sse(f"{base}/events?last_event_id=0", count=expected + len(CASES))
    events = [m.json() for m in messages if m.event != "beats.opencti.deadletter"]
    assert len(messages) - len(events) == len(CASES)
    for case in CASES:
        mine, events = events[: len(case.facts)], events[len(case.facts) :]
        check_facts(case, mine)
        assert all(e["time"] for e in mine), case.name
    assert not events
