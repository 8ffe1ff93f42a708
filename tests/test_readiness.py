"""/readyz tells the truth about the log on a running beat: 503 with the reason whenever it
cannot commit (writer stuck behind a lock, commits failing, log closed), 200 again once it can;
and an event that cannot be encoded is dead-lettered while the events around it go on."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import httpx

from common.envelope import new_event
from tests.support import make_beat, make_events, read_sse, run_beat


async def test_readyz_is_503_while_the_log_cannot_commit_and_200_once_it_can(
    tmp_path: Path,
) -> None:
    beat = make_beat(tmp_path)
    async with run_beat(beat) as base, httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(f"{base}/readyz")).status_code == 200
        lock = sqlite3.connect(beat.log.path, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # another process holds the database: no commit passes
        await asyncio.sleep(5.5)  # the last successful commit is now older than the 5 s window
        answer = await http.get(f"{base}/readyz")
        assert answer.status_code == 503
        assert "no commit completed within 2s" in answer.json()["checks"]["log"]["detail"]
        blocked = beat.pipeline.submit(make_events(1))
        failed = await http.get(f"{base}/readyz")  # the probe, then the commit, time out: 5 s
        lock.execute("ROLLBACK")
        lock.close()
        assert failed.status_code == 503
        await blocked  # the commit waited for the lock and went through
        again = await http.get(f"{base}/readyz")
        assert again.status_code == 200, again.json()
        assert again.json()["checks"]["log"] == {"ok": True, "detail": "writable"}


async def test_an_unencodable_event_is_dead_lettered_and_the_others_are_served(
    tmp_path: Path,
) -> None:
    beat = make_beat(tmp_path)
    async with run_beat(beat) as base:
        bad = new_event(beat="test", type="t", source="s", channel="c", partitionkey="k",
                        data={"name": "\ud800"})  # fmt: skip
        await beat.pipeline.commit([*make_events(1), bad, *make_events(1, start=1)])
        messages = await read_sse(f"{base}/events?last_event_id=0", count=3)
    assert [m.event for m in messages] == ["beats.test.thing", "beats.test.deadletter",
                                           "beats.test.thing"]  # fmt: skip
    dead = messages[1].json()
    assert "cannot be encoded" in dead["data"]["reason"]
    assert "\\ud800" in dead["data"]["raw"]  # kept, escaped
    assert dead["time"] and dead["data"]["context"]["type"] == "t"
    assert json.loads(messages[2].data)["data"]["n"] == 1
