"""The part of Ditto's RQL that change-notification filters use, evaluated on a JSON object.

Follows ``basic-rql.md`` (normalised form only): relational ``eq``, ``ne``, ``gt``, ``ge``,
``lt``, ``le``, ``in``, ``like``, ``ilike``, ``exists``, ``empty`` and logical ``and``, ``or``,
``not``. A property is a JSON pointer into the object (``attributes/location`` or
``/attributes/location``), ``thingId``, or a placeholder (``topic:action``, ``resource:path``,
…) that the caller puts into the object under that very key. Values are numbers, ``true``,
``false``, ``null`` or strings in double or single quotes (``\\`` escapes the next character).

Semantics as documented by Ditto: ``ne`` and the ordering operators match only when the property
exists; comparisons are between values of the same JSON type (numbers with numbers, strings with
strings), with no conversion; ``like`` knows ``*`` (any run) and ``?`` (one character);
``empty`` is true for an absent property, ``null``, ``""``, ``[]`` and ``{}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Predicate", "RqlError", "lookup", "parse"]

Predicate = Callable[[Mapping[str, Any]], bool]
MISSING: Any = object()
_TOKEN = re.compile(
    r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(?P<punct>[(),])|(?P<word>[^(),"'\s]+))"""
)
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")


class RqlError(ValueError):
    """The filter is not (supported) RQL; the message says where."""


@dataclass(frozen=True)
class _Token:
    kind: str  # "str" | "punct" | "word"
    text: str


def parse(text: str) -> Predicate:
    """Compile an RQL filter into a predicate over a JSON object."""
    tokens = _tokenise(text)
    if not tokens:
        raise RqlError("empty filter")
    predicate, position = _Parser(tokens).expression(0)
    if position != len(tokens):
        raise RqlError(f"unexpected {tokens[position].text!r} after the filter")
    return predicate


def _tokenise(text: str) -> list[_Token]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            if text[position:].strip():
                raise RqlError(f"cannot read filter at {text[position : position + 20]!r}")
            break
        kind = match.lastgroup or "word"
        tokens.append(_Token(kind, match.group(kind)))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens

    def _at(self, position: int) -> _Token:
        if position >= len(self.tokens):
            raise RqlError("filter ends early")
        return self.tokens[position]

    def _expect(self, position: int, punct: str) -> int:
        token = self._at(position)
        if token.kind != "punct" or token.text != punct:
            raise RqlError(f"expected {punct!r}, found {token.text!r}")
        return position + 1

    def _arguments(self, position: int) -> tuple[list[_Token], int]:
        """Flat arguments ``a,b,c)`` of a relational operator; returns them and the next index."""
        found = []
        while True:
            token = self._at(position)
            if token.kind == "punct":
                raise RqlError(f"expected a property or value, found {token.text!r}")
            found.append(token)
            position += 1
            if self._at(position).text == ")":
                return found, position + 1
            position = self._expect(position, ",")

    def expression(self, position: int) -> tuple[Predicate, int]:
        name = self._at(position)
        if name.kind != "word":
            raise RqlError(f"expected an operator, found {name.text!r}")
        position = self._expect(position + 1, "(")
        if name.text in ("and", "or", "not"):
            parts = []
            while True:
                part, position = self.expression(position)
                parts.append(part)
                if self._at(position).text == ")":
                    return _logical(name.text, parts), position + 1
                position = self._expect(position, ",")
        arguments, position = self._arguments(position)
        if arguments[0].kind != "word":
            raise RqlError(f"{name.text}(): the first argument must be a property")
        prop = arguments[0].text
        values = [_literal(token) for token in arguments[1:]]
        return _relational(name.text, prop, values), position


def _logical(name: str, parts: list[Predicate]) -> Predicate:
    if name == "and":
        return lambda ctx: all(p(ctx) for p in parts)
    if name == "or":
        return lambda ctx: any(p(ctx) for p in parts)
    if len(parts) != 1:
        raise RqlError("not() takes exactly one expression")
    (part,) = parts
    return lambda ctx: not part(ctx)


def _literal(token: _Token) -> Any:
    if token.kind == "str":
        body = token.text[1:-1]
        return re.sub(r"\\(.)", r"\1", body)
    if token.text in ("true", "false", "null") or _NUMBER.fullmatch(token.text):
        return json.loads(token.text)
    raise RqlError(f"value {token.text!r} is neither a number, a quoted string nor a literal")


def _same_type(a: Any, b: Any) -> bool:
    def kind(value: Any) -> str:
        if isinstance(value, bool):
            return "bool"
        return "number" if isinstance(value, int | float) else type(value).__name__

    return kind(a) == kind(b)


def _ordered(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    return lambda a, b: _same_type(a, b) and isinstance(a, int | float | str) and op(a, b)


def _like(pattern: Any, flags: int = 0) -> re.Pattern[str]:
    if not isinstance(pattern, str):
        raise RqlError("like()/ilike() needs a string pattern")
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, flags | re.DOTALL)


_BINARY: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: _same_type(a, b) and a == b,
    "ne": lambda a, b: not (_same_type(a, b) and a == b),
    "gt": _ordered(lambda a, b: a > b),
    "ge": _ordered(lambda a, b: a >= b),
    "lt": _ordered(lambda a, b: a < b),
    "le": _ordered(lambda a, b: a <= b),
}


def _relational(name: str, prop: str, values: list[Any]) -> Predicate:
    arity = {"exists": 0, "empty": 0, "in": -1}.get(name, 1)
    if name not in _BINARY and arity == 1 and name not in ("like", "ilike"):
        raise RqlError(f"unsupported RQL operator {name!r}")
    if (arity >= 0 and len(values) != arity) or (arity < 0 and not values):
        raise RqlError(f"{name}() has the wrong number of arguments")
    if name == "exists":
        return lambda ctx: lookup(ctx, prop) is not MISSING
    if name == "empty":
        return lambda ctx: lookup(ctx, prop) in (MISSING, None, "", [], {})
    if name == "in":
        return lambda ctx: any(_BINARY["eq"](lookup(ctx, prop), v) for v in values)
    if name in ("like", "ilike"):
        regex = _like(values[0], re.IGNORECASE if name == "ilike" else 0)
        return lambda ctx: isinstance(v := lookup(ctx, prop), str) and bool(regex.fullmatch(v))
    op, literal = _BINARY[name], values[0]

    def predicate(ctx: Mapping[str, Any]) -> bool:
        value = lookup(ctx, prop)
        return value is not MISSING and op(value, literal)

    return predicate


def lookup(ctx: Mapping[str, Any], prop: str) -> Any:
    """The value at a property (placeholder key or JSON pointer), or :data:`MISSING`."""
    if prop in ctx:
        return ctx[prop]
    node: Any = ctx
    for part in prop.strip("/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node
