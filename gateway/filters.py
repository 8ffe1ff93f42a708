"""Event filters: the CloudEvents Subscriptions API dialects, from query parameters or JSON.

Pure functions, no I/O. A filter is a tree of :class:`Match`, :class:`All`, :class:`Any` and
:class:`Not`; :func:`matches` evaluates it against one CloudEvent (its JSON object).

Query-parameter syntax (every parameter must hold; parameters combine with ``all``)::

    exact.type=beats.hivemq.message       the attribute equals the value
    prefix.subject=city/                  ... starts with the value
    suffix.subject=/station-001           ... ends with the value
    not.suffix.subject=/test              negation of one condition
    any.exact.type=beats.opencti.create   the ``any.`` conditions form one group:
    any.exact.type=beats.opencti.update   at least one of them must hold
    data.type=ERROR                       shorthand for exact.data.type=ERROR
    filter=[{"exact":{"beat":"hivemq"}}]  a Subscriptions API filter array (JSON; combined
                                          with all other parameters by ``all``)

An attribute is a CloudEvents context attribute or extension (lower-case letters and digits:
``type``, ``subject``, ``source``, ``beat``, ``tlp``, ``mqttqos`` ...) or ``data.<path>``, a
field inside ``data`` (dotted, list positions as numbers: ``data.readings.0.value``). Values
compare as strings, case-sensitively, as the Subscriptions API says; numbers and booleans in the
event compare by their JSON text (``data.level=3`` matches ``3``, ``data.ok=true`` matches
``true``). A missing attribute matches no condition (so ``not.`` of it holds).

The JSON form takes the Subscriptions API filter objects ``{"exact": {attr: value, ...}}``,
``prefix``, ``suffix`` (several attributes in one object must all hold), ``{"all": [...]}``,
``{"any": [...]}`` and ``{"not": {...}}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any as AnyType
from typing import Literal, TypeAlias

__all__ = [
    "ATTRIBUTE",
    "MAX_CONDITIONS",
    "MAX_FILTER_CHARS",
    "RESERVED_PARAMS",
    "All",
    "Any",
    "Filter",
    "FilterError",
    "Match",
    "Not",
    "matches",
    "parse_filter_json",
    "parse_query",
]

Dialect = Literal["exact", "prefix", "suffix"]
_DIALECTS: tuple[Dialect, ...] = ("exact", "prefix", "suffix")
ATTRIBUTE = re.compile(r"^[a-z0-9]{1,64}$")
RESERVED_PARAMS = frozenset({"last_event_id", "access_token"})
_MAX_DEPTH = 16
MAX_FILTER_CHARS = 8192
"""Longest ``filter=`` JSON, and longest query string of filter parameters in all."""
MAX_CONDITIONS = 256
"""Most conditions (matches) in one request's filter."""


class FilterError(ValueError):
    """A filter that cannot be parsed; the message says what is wrong (HTTP 400)."""


@dataclass(frozen=True)
class Match:
    dialect: Dialect
    attribute: str
    value: str


@dataclass(frozen=True)
class All:
    filters: tuple[Filter, ...]


@dataclass(frozen=True)
class Any:
    filters: tuple[Filter, ...]


@dataclass(frozen=True)
class Not:
    filter: Filter


Filter: TypeAlias = Match | All | Any | Not
_MISSING = object()


def _check_attribute(name: str) -> str:
    if name.startswith("data."):
        if any(part == "" for part in name.split(".")[1:]):
            raise FilterError(f"bad data path {name!r}: empty segment")
        return name
    if not ATTRIBUTE.match(name):
        raise FilterError(
            f"bad attribute {name!r}: a CloudEvents attribute is lower-case letters and "
            "digits (type, subject, source, beat, ...), or data.<path> for a data field"
        )
    return name


def _lookup(event: Mapping[str, AnyType], attribute: str) -> object:
    if not attribute.startswith("data."):
        return event.get(attribute, _MISSING)
    value: object = event.get("data", _MISSING)
    for part in attribute.split(".")[1:]:
        if isinstance(value, Mapping):
            value = value.get(part, _MISSING)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _as_text(value: object) -> str | None:
    if value is _MISSING or isinstance(value, Mapping | list):
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value)


def matches(filter: Filter | None, event: Mapping[str, AnyType]) -> bool:
    """Whether ``event`` (a CloudEvent as a JSON object) passes ``filter`` (``None``: all)."""
    if filter is None:
        return True
    if isinstance(filter, Match):
        text = _as_text(_lookup(event, filter.attribute))
        if text is None:
            return False
        if filter.dialect == "exact":
            return text == filter.value
        if filter.dialect == "prefix":
            return text.startswith(filter.value)
        return text.endswith(filter.value)
    if isinstance(filter, All):
        return all(matches(f, event) for f in filter.filters)
    if isinstance(filter, Any):
        return any(matches(f, event) for f in filter.filters)
    return not matches(filter.filter, event)


def _parse_param(key: str, value: str) -> Filter:
    """One query condition without its ``any.`` prefix: ``[not.]dialect.attr`` or ``data.x``."""
    negate = key.startswith("not.")
    body = key[4:] if negate else key
    if body.startswith("data."):
        match = Match("exact", _check_attribute(body), value)
    else:
        dialect, dot, attribute = body.partition(".")
        if not dot or dialect not in _DIALECTS:
            raise FilterError(
                f"unknown query parameter {key!r}: filters are exact.<attr>, prefix.<attr>, "
                "suffix.<attr>, data.<path>, with not. or any. in front, or filter=<json>"
            )
        match = Match(dialect, _check_attribute(attribute), value)
    return Not(match) if negate else match


def parse_query(params: Iterable[tuple[str, str]]) -> Filter | None:
    """The filter of a request's query parameters (``None``: no filter). Parameters in
    :data:`RESERVED_PARAMS` are skipped; any other unknown parameter is a :class:`FilterError`."""
    conditions: list[Filter] = []
    alternatives: list[Filter] = []
    size = 0
    for key, value in params:
        if key in RESERVED_PARAMS:
            continue
        size += len(key) + len(value)
        if size > MAX_FILTER_CHARS:
            raise FilterError(f"the filter parameters exceed {MAX_FILTER_CHARS} characters")
        if key == "filter":
            conditions.append(parse_filter_json(value))
        elif key.startswith("any."):
            alternatives.append(_parse_param(key[4:], value))
        else:
            conditions.append(_parse_param(key, value))
    if alternatives:
        conditions.append(Any(tuple(alternatives)))
    if not conditions:
        return None
    combined = conditions[0] if len(conditions) == 1 else All(tuple(conditions))
    if _count(combined) > MAX_CONDITIONS:
        raise FilterError(f"more than {MAX_CONDITIONS} filter conditions")
    return combined


def _count(filter: Filter) -> int:
    if isinstance(filter, Match):
        return 1
    if isinstance(filter, Not):
        return _count(filter.filter)
    return sum(_count(f) for f in filter.filters)


def parse_filter_json(text: str) -> Filter:
    """A Subscriptions API filter array (or one filter object) in JSON, combined with all.
    Bounded before it is decoded: at most :data:`MAX_FILTER_CHARS` characters, nesting no
    deeper than the filter grammar allows."""
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(f"filter is longer than {MAX_FILTER_CHARS} characters")
    if _nesting(text) > 2 * _MAX_DEPTH + 4:
        raise FilterError(f"filter nested deeper than {_MAX_DEPTH} levels")
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FilterError(f"filter is not valid JSON: {str(exc)[:200]}") from None
    items = raw if isinstance(raw, list) else [raw]
    return _combine(All, [_parse_object(item, 0) for item in items])


def _nesting(text: str) -> int:
    """The deepest ``[`` / ``{`` nesting of a JSON text (strings skipped), without decoding."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _combine(kind: type[All] | type[Any], filters: Sequence[Filter]) -> Filter:
    if not filters:
        raise FilterError(f"an empty {kind.__name__.lower()} filter list")
    return filters[0] if len(filters) == 1 else kind(tuple(filters))


def _parse_object(item: object, depth: int) -> Filter:
    if depth > _MAX_DEPTH:
        raise FilterError(f"filter nested deeper than {_MAX_DEPTH} levels")
    if not isinstance(item, dict) or len(item) != 1:
        raise FilterError(
            f"each filter is an object with one key (exact, prefix, suffix, all, any, not), "
            f"got {json.dumps(item)[:100]}"
        )
    ((kind, body),) = item.items()
    if kind in _DIALECTS:
        return _parse_dialect(kind, body)
    if kind in ("all", "any"):
        if not isinstance(body, list):
            raise FilterError(f"{kind} takes a list of filters")
        children = [_parse_object(child, depth + 1) for child in body]
        return _combine(All if kind == "all" else Any, children)
    if kind == "not":
        return Not(_parse_object(body, depth + 1))
    raise FilterError(f"unknown filter dialect {kind!r} (exact, prefix, suffix, all, any, not)")


def _parse_dialect(dialect: Dialect, body: object) -> Filter:
    if not isinstance(body, dict) or not body:
        raise FilterError(f"{dialect} takes a non-empty object of attribute: value")
    found: list[Filter] = []
    for attribute, value in body.items():
        if not isinstance(value, str):
            raise FilterError(f"{dialect}.{attribute}: the value must be a string")
        found.append(Match(dialect, _check_attribute(attribute), value))
    return _combine(All, found)
