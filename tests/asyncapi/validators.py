"""Checking AsyncAPI documents and events the way their consumers do.

* documents: the official AsyncAPI parser (npm ``@asyncapi/parser``, pinned in
  ``js/package-lock.json``, installed by ``npm ci`` when missing), run with node
  (``js/parse.js``); an error-level diagnostic is a failure;
* events: each event, as read from SSE or Kafka, against the payload schema of the message
  named by its ``type`` in the document (``jsonschema``, draft-07 with format checking; the
  references into ``components`` resolved within the document).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry
from referencing.jsonschema import DRAFT7

from tests.support import npm_ci

__all__ = [
    "PARSER_DIR",
    "EventChecker",
    "as_committed",
    "assert_match",
    "parse_errors",
    "system_checker",
]

PARSER_DIR = Path(__file__).parent / "js"
_BASE = "urn:works-beats:test:asyncapi-document"


def parse_errors(documents: dict[str, dict[str, Any]], workdir: Path) -> dict[str, list[str]]:
    """The official parser's errors (severity 0) for each named document ([]: valid)."""
    npm_ci(PARSER_DIR, "@asyncapi/parser")
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed: the AsyncAPI parser cannot run")
    paths: dict[str, Path] = {}
    for name, document in documents.items():
        paths[name] = workdir / f"asyncapi-{len(paths)}.json"
        paths[name].write_text(json.dumps(document))
    done = subprocess.run(
        [node, str(PARSER_DIR / "parse.js"), *map(str, paths.values())],
        cwd=PARSER_DIR,
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
    )
    verdicts = json.loads(done.stdout)
    errors = {}
    for name, path in paths.items():
        verdict = verdicts[str(path)]
        diagnostics = verdict["diagnostics"]
        found = [f"{d['path']}: {d['message']}" for d in diagnostics if d["severity"] == 0]
        errors[name] = found if verdict["parsed"] or found else ["not parsed"]
    return errors


class EventChecker:
    """Validates events against the message schemas of one AsyncAPI document."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource = DRAFT7.create_resource(document)
        self._registry: Registry[Any] = Registry().with_resource(_BASE, resource)
        self._validators: dict[str, jsonschema.Draft7Validator] = {}

    def _validator(self, event_type: str) -> jsonschema.Draft7Validator | None:
        if event_type not in self.document["components"]["messages"]:
            return None
        if event_type not in self._validators:
            schema = {"$ref": f"{_BASE}#/components/messages/{event_type}/payload"}
            self._validators[event_type] = jsonschema.Draft7Validator(
                schema,
                registry=self._registry,
                format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER,
            )
        return self._validators[event_type]

    def problems(self, event: dict[str, Any]) -> list[str]:
        """Why ``event`` does not match its message (``[]``: it does)."""
        where = f"{event.get('type')} {event.get('id')}"
        validator = self._validator(str(event.get("type")))
        if validator is None:
            return [f"{where}: no message for its type in the document"]
        return [f"{where}: {_describe(error)}" for error in validator.iter_errors(event)]

    def check(self, events: Iterable[dict[str, Any]]) -> list[str]:
        return [problem for event in events for problem in self.problems(event)]


def _describe(error: jsonschema.ValidationError) -> str:
    """Where and which keyword failed (the message alone can be the whole event)."""
    keyword = "/".join(map(str, error.relative_schema_path))
    message = error.message if len(error.message) < 200 else f"fails {keyword}"
    if error.context:  # oneOf / anyOf: what each branch said
        message += " (" + "; ".join(_describe(e) for e in error.context[:4]) + ")"
    return f"{error.json_path}: {message}"


def as_committed(event: dict[str, Any]) -> dict[str, Any]:
    """A normaliser's event as the log commits it: with a ``sequence``, and a ``time`` where
    the test gave the normaliser no receive time."""
    committed = {**event, "sequence": 1}
    committed.setdefault("time", "2026-11-01T12:00:00Z")
    return committed


@cache
def system_checker() -> EventChecker:
    """The checker of ``docs/asyncapi.json`` as the code generates it now."""
    from beats.asyncapi import system_document

    return EventChecker(system_document())


def assert_match(events: Iterable[Any]) -> None:
    """Every event (a :class:`~common.envelope.CloudEvent`) matches its message in
    ``docs/asyncapi.json`` (as the code generates it now)."""
    found = [json.loads(event.to_json()) for event in events]
    problems = system_checker().check(as_committed(event) for event in found)
    assert not problems, "\n".join(problems[:20])
