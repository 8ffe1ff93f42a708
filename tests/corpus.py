"""The upstream-shaped corpus: payloads written for these tests but shaped exactly like what each
upstream sends, in each of its modes and versions, run end to end through the real transport.

Each beat has ``tests/<beat>/corpus/<case>.json``: ``source`` (the upstream test or documentation
page the payload follows), the payload in the beat's own terms (see each beat's
``test_corpus.py``) and ``events``: one object per event the payload must produce, in order,
mapping JSON pointers (RFC 6901) into the event as a consumer receives it to the value found
there — the facts that must reach the processed view. An expected value
``{"$decimal_at_least": n}`` matches a String holding a decimal integer of at least ``n`` (for
values the transport may lower, as a broker counts down an MQTT message expiry).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Case", "check_facts", "load_corpus", "resolve"]

_MISSING = object()


@dataclass(frozen=True)
class Case:
    name: str
    spec: dict[str, Any]

    @property
    def facts(self) -> list[dict[str, Any]]:
        facts: list[dict[str, Any]] = self.spec["events"]
        return facts


def load_corpus(beat_dir: Path) -> list[Case]:
    cases = []
    for path in sorted((beat_dir / "corpus").glob("*.json")):
        spec = json.loads(path.read_text())
        if not spec.get("source") or not isinstance(spec.get("events"), list):
            raise ValueError(f"{path}: a corpus file needs 'source' and 'events'")
        cases.append(Case(path.stem, spec))
    return cases


def resolve(document: Any, pointer: str) -> Any:
    """The value at ``pointer`` (RFC 6901), or a sentinel that equals nothing."""
    node = document
    for raw in pointer.split("/")[1:]:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return _MISSING
    return node


def check_facts(case: Case, events: list[dict[str, Any]]) -> None:
    """Every fact of ``case`` holds in the events (same count, same order)."""
    assert len(events) == len(case.facts), (
        f"{case.name}: {len(events)} events for {len(case.facts)} expected"
    )
    for index, (event, facts) in enumerate(zip(events, case.facts, strict=True)):
        assert facts, f"{case.name}: event {index} has no facts to check"
        for pointer, expected in facts.items():
            found = resolve(event, pointer)
            assert found is not _MISSING, f"{case.name}[{index}]: nothing at {pointer}"
            assert _matches(found, expected), (
                f"{case.name}[{index}] {pointer}: {found!r} != {expected!r}"
            )


def _matches(found: Any, expected: Any) -> bool:
    if isinstance(expected, dict) and list(expected) == ["$decimal_at_least"]:
        return (
            isinstance(found, str)
            and found.isdigit()
            and int(found) >= int(expected["$decimal_at_least"])
        )
    return bool(found == expected)
