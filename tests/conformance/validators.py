"""Reading the beats' events the way CloudEvents consumers do: the official SDKs and the JSON
schema, plus the CloudEvents type system, which neither of them checks fully.

* Python SDK (PyPI ``cloudevents``): its current API (``cloudevents.core``: the JSON event
  format and the Kafka binding's ``from_structured``) and the 1.x API that the same package keeps
  as ``cloudevents.v1`` (``from_json``, what ``cloudevents.http.from_json`` was in 1.x);
* JavaScript SDK (npm ``cloudevents``), run with node (``js/validate.js``): ``new
  CloudEvent`` strict, ``HTTP.toEvent`` and ``Kafka.toEvent``; installed by ``npm ci`` into
  ``js/node_modules`` from the committed ``package-lock.json`` when missing;
* the CloudEvents JSON schema (the spec's ``cloudevents/formats/cloudevents.json``, draft-07),
  taken from the JavaScript SDK's package, which embeds it (so no copy of it lives here), with
  format checking (``date-time``, ``uri-reference``, ``uri``);
* the type system (spec § Type System): every context attribute a Boolean, an Integer (signed
  32 bits), a String (or a URI, URI-reference or Timestamp written as one); the JSON format has no
  other kinds.

A *record* is what a consumer receives: ``{"via": "sse"|"kafka", "value": str, "key": str |
None, "headers": {name: str}}`` (Kafka records: also ``"topic"``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from cloudevents.core.bindings.kafka import KafkaMessage
from cloudevents.core.bindings.kafka import from_structured as core_from_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.v1.http import from_json as v1_from_json

from tests.support import npm_ci

__all__ = [
    "INT32",
    "JS_DIR",
    "Record",
    "check_js",
    "check_python",
    "check_schema",
    "check_type_system",
    "ensure_js_sdk",
]

JS_DIR = Path(__file__).parent / "js"
INT32 = (-(2**31), 2**31 - 1)
Record = dict[str, Any]
_SCHEMA_LINE = re.compile(r'const schema\d+ = (\{\s*"\$schema".*?\});\n')
_DATA = frozenset({"data", "data_base64"})


def ensure_js_sdk() -> Path:
    """The JavaScript SDK's directory, installed with ``npm ci`` (the lock file) if missing."""
    return npm_ci(JS_DIR, "cloudevents")


@cache
def schema() -> dict[str, Any]:
    """The CloudEvents JSON schema as the JavaScript SDK ships it (``dist/schema/v1.js``)."""
    source = (ensure_js_sdk() / "dist" / "schema" / "v1.js").read_text()
    found = _SCHEMA_LINE.search(source)
    if found is None:
        raise RuntimeError("the CloudEvents JSON schema is not where the SDK used to keep it")
    loaded: dict[str, Any] = json.loads(found.group(1))
    return loaded


def check_schema(event: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(
        schema(), format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )
    return [f"schema: {e.json_path}: {e.message}" for e in validator.iter_errors(event)]


def check_type_system(event: dict[str, Any]) -> list[str]:
    """Every context attribute (everything but ``data``/``data_base64``) a Boolean, a String or
    an Integer within signed 32 bits; names lower-case letters and digits."""
    problems = []
    for name, value in event.items():
        if name in _DATA:
            continue
        if not re.fullmatch(r"[a-z0-9]+", name):
            problems.append(f"attribute name {name!r} is not [a-z0-9]+")
        if isinstance(value, bool | str):
            continue
        if isinstance(value, int) and INT32[0] <= value <= INT32[1]:
            continue
        problems.append(f"attribute {name}={value!r} is not a Boolean, Integer (int32) or String")
    if "time" not in event:
        problems.append("no time attribute")
    return problems


def _same(event: dict[str, Any], read_id: Any, content_type: Any, what: str) -> list[str]:
    problems = []
    if read_id != event["id"]:
        problems.append(f"{what}: id {read_id!r}, the event has {event['id']!r}")
    if content_type != event.get("datacontenttype"):
        problems.append(
            f"{what}: datacontenttype {content_type!r}, the event has "
            f"{event.get('datacontenttype')!r}"
        )
    return problems


def _expected_time(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00"))


def check_python(record: Record) -> list[str]:
    """The current API's JSON format and Kafka binding, and the 1.x API's ``from_json``."""
    event = json.loads(record["value"])
    problems: list[str] = []
    try:
        current = JSONFormat().read(None, record["value"].encode())
        problems += _same(event, current.get_id(), current.get_datacontenttype(), "core JSON")
        if "time" in event and current.get_time() != _expected_time(event):
            problems.append(f"core JSON: time {current.get_time()} for {event['time']}")
        if record["via"] == "kafka":
            message = KafkaMessage(
                headers={k: v.encode() for k, v in record["headers"].items()},
                key=record["key"],
                value=record["value"].encode(),
            )
            read = core_from_structured(message, JSONFormat())
            problems += _same(event, read.get_id(), read.get_datacontenttype(), "core Kafka")
        legacy = v1_from_json(record["value"])
        problems += _same(event, legacy["id"], legacy.get("datacontenttype"), "1.x from_json")
    except Exception as exc:  # the SDK's verdict is what this check reports
        problems.append(f"python SDK: {type(exc).__name__}: {exc}")
    return problems


def check_js(records: list[Record], workdir: Path) -> list[dict[str, Any]]:
    """The JavaScript SDK's verdict on every record (in order)."""
    ensure_js_sdk()
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed: the JavaScript SDK cannot run")
    given = workdir / "records.json"
    given.write_text(json.dumps(records))
    done = subprocess.run(
        [node, str(JS_DIR / "validate.js"), str(given)],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    verdicts: list[dict[str, Any]] = json.loads(done.stdout)
    return verdicts
