"""The row shape every source of this package produces, and its pure conversions.

A CloudEvent (structured JSON, as the beats serve it on SSE and Kafka) becomes one row of
:data:`EVENT_SCHEMA`:

* the CloudEvents attributes ``id``, ``source``, ``type``, ``subject``, ``time`` (timestamp),
  ``datacontenttype`` and the beats' extensions ``beat``, ``sequence`` (long: the log sequence,
  the SSE id) and ``partitionkey`` as columns;
* ``extensions``: every other attribute (``specversion`` aside) as ``map<string,string>``;
  strings as they are, numbers and booleans as JSON text, objects and lists as compact JSON;
  ``data_base64`` lands here too;
* ``data``: the event's ``data`` as JSON text (``"text"`` for a string payload, ``null`` for
  JSON null, NULL when absent). Parse it with :func:`spark_receiver.parse_data`.

The Kafka helpers build the same columns with Spark SQL (:mod:`spark_receiver.kafka`); the
tests check that both paths agree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]

__all__ = [
    "ARROW_SCHEMA",
    "COLUMNS",
    "EVENT_SCHEMA",
    "KNOWN_ATTRIBUTES",
    "event_to_row",
    "parse_time",
    "rows_to_batch",
]

EVENT_SCHEMA = (
    "id string, source string, type string, subject string, time timestamp, "
    "datacontenttype string, beat string, sequence long, partitionkey string, "
    "extensions map<string,string>, data string"
)
COLUMNS = [part.strip().split(" ", 1)[0] for part in EVENT_SCHEMA.split(", ")]
_STRINGS = ("id", "source", "type", "subject")
KNOWN_ATTRIBUTES = frozenset(
    {"specversion", "id", "source", "type", "subject", "time", "datacontenttype"}
    | {"beat", "sequence", "partitionkey", "data"}
)

Row = tuple[Any, ...]

_TEXT = pa.string()
ARROW_SCHEMA = pa.schema(
    [
        *((name, _TEXT) for name in _STRINGS),
        ("time", pa.timestamp("us", tz="UTC")),
        ("datacontenttype", _TEXT),
        ("beat", _TEXT),
        ("sequence", pa.int64()),
        ("partitionkey", _TEXT),
        ("extensions", pa.map_(_TEXT, _TEXT)),
        ("data", _TEXT),
    ]
)
"""The Arrow form of :data:`EVENT_SCHEMA` as Spark expects it from a Python data source."""


def rows_to_batch(rows: Sequence[Row]) -> pa.RecordBatch:
    """Rows as one Arrow record batch, column by column (several times faster than letting
    Spark convert tuple by tuple)."""
    columns = zip(*rows, strict=True) if rows else ([] for _ in COLUMNS)
    arrays = [
        pa.array(list(column), type=field.type)
        for column, field in zip(columns, ARROW_SCHEMA, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=ARROW_SCHEMA)


def parse_time(value: Any) -> datetime | None:
    """RFC 3339 text (``Z`` or an offset) to an aware datetime; None if absent or invalid."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _long(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def event_to_row(event: dict[str, Any]) -> Row:
    """One parsed CloudEvent (a JSON object) as a tuple in :data:`COLUMNS` order."""
    extensions = {key: _text(value) for key, value in event.items() if key not in KNOWN_ATTRIBUTES}
    data = (
        json.dumps(event["data"], separators=(",", ":"), ensure_ascii=False)
        if "data" in event
        else None
    )
    return (
        *(_text(event.get(name)) for name in _STRINGS),
        parse_time(event.get("time")),
        _text(event.get("datacontenttype")),
        _text(event.get("beat")),
        _long(event.get("sequence")),
        _text(event.get("partitionkey")),
        extensions,
        data,
    )
