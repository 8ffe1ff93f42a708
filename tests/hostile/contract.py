"""What every beat must do with hostile input, judged on a :class:`~tests.hostile.support.Report`.

For each input the outcome is one of:

* **committed**: events that are the input's (``Upstream.owns``) keep it losslessly
  (``Upstream.lossless``: JSON equal to the input's strict JSON value with the same types, or
  the input's exact bytes as ``data_base64`` — with a ``datanote`` saying why when the bytes are
  UTF-8 text —, or its exact text as a string);
* **dead-lettered**: an event of the ``deadletter`` channel whose ``data.sha256`` is of the
  input's bytes, with a reason, the size, the input (or its first bytes, ``truncated``) as
  ``raw``/``raw_base64``, and ``time``;
* **refused**: an HTTP 4xx answer (a 400 keeps the input as a dead letter, as ``/notify``
  documents);

and anything else is a defect: **lost** (no trace), **lossy** (committed, but something of the
input is missing or changed), or a malformed dead letter. Normal inputs must be committed.
"""

from __future__ import annotations

import base64
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from tests.asyncapi.validators import system_checker
from tests.hostile.support import Input, Phase, Report, Served, Upstream

__all__ = ["RSS_GROWTH_BOUND", "Contract", "Outcome", "judge", "same_json"]

RSS_GROWTH_BOUND = 256 * 1024 * 1024
"""Peak RSS over the RSS at start-up: the per-process budget of issue 16 (its largest input is
16 MiB; a beat that keeps even a few copies of the inputs it has seen exceeds it)."""


@dataclass(frozen=True)
class Outcome:
    kind: str
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.kind in ("committed", "dead-lettered", "refused")


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values with the same types (``1`` is not ``1.0`` nor ``True``)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _dead_letter_problem(item: Input, event: dict[str, Any]) -> str | None:
    data = event.get("data")
    if not isinstance(data, dict):
        return "dead letter without data"
    problems = []
    if not isinstance(data.get("reason"), str) or not data["reason"]:
        problems.append("no reason")
    if data.get("size") != len(item.raw):
        problems.append(f"size {data.get('size')} for {len(item.raw)} bytes")
    if "raw_base64" in data:
        kept = base64.b64decode(data["raw_base64"])
    else:
        kept = str(data.get("raw", "")).encode("utf-8")
    if not item.raw.startswith(kept) or data.get("truncated") != (len(kept) < len(item.raw)):
        problems.append("the input kept is not the input (or its first bytes, truncated)")
    if not event.get("time"):
        problems.append("no time")
    return "; ".join(problems) or None


def judge(upstream: Upstream, item: Input, events: list[Served]) -> Outcome:
    owned = [
        s.event
        for s in events
        if s.event is not None and not s.dead_letter and upstream.owns(item, s.event)
    ]
    dead = [
        s.event
        for s in events
        if s.event is not None
        and s.dead_letter
        and s.event["data"].get("sha256") == item.sha256
        and upstream.dead_letter_key(s.event["data"]) in (None, item.key)
    ]
    answer = f"HTTP {item.status}" if item.status is not None else ""
    seen = ", ".join(x for x in (answer, item.note) if x)
    if owned:
        problem = upstream.lossless(item, owned)
        if item.status is not None and item.status >= 400:
            problem = f"committed, yet answered {answer}"
        kept = f"as {_form(owned[0])}" + (f", {seen}" if seen else "")
        return Outcome("lossy", problem) if problem else Outcome("committed", kept)
    if dead:
        problem = _dead_letter_problem(item, dead[0])
        if problem:
            return Outcome("bad dead letter", problem)
        reason = str(dead[0]["data"]["reason"])[:120]
        if item.status is not None and not 400 <= item.status < 500:
            return Outcome("lossy", f"dead-lettered ({reason}), yet answered {answer}")
        return Outcome("refused" if item.status else "dead-lettered", f"{seen} {reason}".strip())
    if item.status is not None and item.status < 300 and upstream.lossless(item, []) is None:
        return Outcome("committed", f"{answer}, nothing to keep")
    if item.status is not None and 400 <= item.status < 500 and item.status != 400:
        return Outcome("refused", answer)
    if item.status == 400:
        return Outcome("lost", "HTTP 400, but the input is not kept as a dead letter")
    return Outcome("lost", seen or "no event, no dead letter")


def _form(event: dict[str, Any]) -> str:
    if "data_base64" in event:
        return f"data_base64 (datanote: {event.get('datanote')})"
    if isinstance(event.get("data"), str) and "json" not in str(event.get("datacontenttype")):
        return "text"
    return "JSON data"


def _table(rows: list[tuple[Input, Outcome]]) -> str:
    return "\n".join(f"  {i.label}: {o.kind}: {o.detail}"[:400] for i, o in rows)


def _counter(metrics: str, name: str) -> float:
    pattern = rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+]+)$"
    return sum(float(v) for v in re.findall(pattern, metrics, re.M))


class Contract:
    """The guarantees, one test each, for the report a subclass's ``report`` fixture makes."""

    pytestmark = [pytest.mark.slow]

    @pytest.fixture(scope="class")
    @classmethod
    def upstream(cls) -> Upstream:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def report(cls) -> Report:
        raise NotImplementedError

    @staticmethod
    def outcomes(upstream: Upstream, phase: Phase) -> list[tuple[Input, Outcome]]:
        events = phase.events()
        return [(item, judge(upstream, item, events)) for item in phase.inputs]

    def test_summary(self, upstream: Upstream, report: Report) -> None:
        """One ``HOSTILE`` line per beat in the output (``pytest -s``): what became of what."""
        for name, phase in (("first run", report.first), ("after restart", report.restarted)):
            rows = self.outcomes(upstream, phase)
            kinds = Counter(o.kind for i, o in rows if not i.normal)
            normal = sum(1 for i, o in rows if i.normal and o.kind == "committed")
            growth = (phase.rss_peak - phase.rss_start) / 2**20
            print(f"HOSTILE {report.beat} ({name}): {len(rows) - sum(i.normal for i, _ in rows)} "
                  f"hostile inputs {dict(sorted(kinds.items()))}; normal {normal}/"
                  f"{sum(i.normal for i, _ in rows)} committed; /readyz {phase.readyz[0]}; "
                  f"peak RSS +{growth:.0f} MiB")  # fmt: skip
            assert rows, f"{name}: no input was sent"

    def test_every_normal_input_is_committed_and_served_in_order(
        self, upstream: Upstream, report: Report
    ) -> None:
        for phase in (report.first, report.restarted):
            rows = self.outcomes(upstream, phase)
            missing = [(i, o) for i, o in rows if i.normal and o.kind != "committed"]
            assert not missing, f"normal inputs not committed:\n{_table(missing)}"
            firsts = []
            for served in phase.events():
                normal = [i for i in phase.inputs if i.normal and served.event is not None]
                owner = next((i for i in normal if upstream.owns(i, served.event or {})), None)
                if owner is not None and owner.label not in firsts:
                    firsts.append(owner.label)
            assert firsts == [i.label for i in phase.inputs if i.normal], "out of order"

    def test_every_hostile_input_is_kept_losslessly_dead_lettered_or_refused(
        self, upstream: Upstream, report: Report
    ) -> None:
        bad = []
        for phase in (report.first, report.restarted):
            rows = self.outcomes(upstream, phase)
            bad += [(i, o) for i, o in rows if not i.normal and not o.accepted]
        assert not bad, f"{len(bad)} hostile inputs mishandled:\n{_table(bad)}"

    def test_dead_letters_are_in_the_deadletter_channel(self, report: Report) -> None:
        for phase in (report.first, report.restarted):
            dead = [s.id for s in phase.replay if s.dead_letter]
            assert phase.dead_letter_channel == dead

    def test_served_events_are_strict_json_and_the_replay_is_the_live_stream(
        self, report: Report
    ) -> None:
        phase = report.restarted if report.restarted.replay else report.first
        invalid = [f"{s.id} {s.name}: {s.error}" for s in phase.replay if s.error]
        assert not invalid, "served data that is not strict JSON:\n" + "\n".join(invalid[:20])
        live = [(s.id, s.data) for s in phase.live]
        assert live == [(s.id, s.data) for s in phase.replay]
        assert [int(s.id) for s in phase.replay] == list(range(1, len(phase.replay) + 1))

    def test_every_served_event_matches_its_asyncapi_message(self, report: Report) -> None:
        """Whatever came in, what goes out is what docs/asyncapi.json says (its type's
        message: the envelope, the extensions, the schema of its data)."""
        for phase in (report.first, report.restarted):
            events = [s.event for s in phase.replay if s.event is not None]
            assert events, "no event served"
            problems = system_checker().check(events)
            assert not problems, "\n".join(problems[:20])

    def test_readyz_is_200_exactly_while_the_beat_can_commit(self, report: Report) -> None:
        for name, phase in (("first run", report.first), ("after restart", report.restarted)):
            status, body = phase.readyz
            truthful = (status == 200) == phase.can_commit
            assert truthful, f"{name}: can commit={phase.can_commit}, /readyz {status}: {body}"

    def test_memory_stays_bounded(self, report: Report) -> None:
        for name, phase in (("first run", report.first), ("after restart", report.restarted)):
            growth = phase.rss_peak - phase.rss_start
            assert phase.rss_peak, f"{name}: the process was gone before its memory was read"
            assert growth < RSS_GROWTH_BOUND, f"{name}: peak RSS {growth >> 20} MiB over start"

    def test_no_input_crashes_the_process_or_its_source(self, report: Report) -> None:
        phase = report.first
        assert not phase.start_error, phase.start_error
        assert phase.alive, "the beat process died"
        restarts = _counter(phase.metrics, "beats_task_restarts_total")
        reconnects = _counter(phase.metrics, "beats_source_reconnects_total")
        assert (restarts, reconnects) == (0, 0), "a task restarted or the source reconnected"
        tracebacks = report.log.count("Traceback (most recent call last)")
        assert tracebacks == 0, f"{tracebacks} tracebacks in the beat's log"

    def test_a_restart_on_the_same_data_takes_the_hostile_input_again_and_goes_on(
        self, report: Report
    ) -> None:
        first, again = report.first, report.restarted
        assert not again.start_error, again.start_error
        assert again.alive and again.settled, "the restarted beat did not serve its inputs"
        before = [(s.id, s.data) for s in first.replay]
        assert [(s.id, s.data) for s in again.replay[: len(before)]] == before
        assert again.head > max(first.head, 0)
