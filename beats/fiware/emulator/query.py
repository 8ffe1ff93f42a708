"""A subset of Orion's Simple Query Language (``orion-api.md`` § Simple Query Language) and of
NGSI-LD ``q``, evaluated against an entity's attribute values.

Supported: statements joined by ``;`` (AND) and, for NGSI-LD, ``|`` (OR, lower precedence, no
parentheses); unary ``attr`` (exists) and ``!attr`` (does not exist); binary ``==``, ``!=``,
``>``, ``>=``, ``<``, ``<=``, ranges ``a..b``, lists ``a,b,c`` and ``~=`` (regular expression).
Values are numbers, ``true``/``false``, quoted strings (``'…'`` v2, ``"…"`` LD) or bare text.
Not supported (a ``q`` using them never matches): attribute paths (``a.b``), ``mq``, geo-queries.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["QueryError", "compile_q"]

_STATEMENT = re.compile(r"^\s*([A-Za-z0-9_:@\-]+)\s*(==|!=|>=|<=|~=|>|<)\s*(.+?)\s*$")
Predicate = Callable[[Mapping[str, Any]], bool]


class QueryError(ValueError):
    """The ``q`` expression cannot be parsed."""


def _literal(text: str) -> Any:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _compare(op: str, left: Any, right: Any) -> bool:
    if isinstance(left, bool) != isinstance(right, bool):
        return op == "!="
    try:
        outcome = {
            ">": lambda: left > right,
            ">=": lambda: left >= right,
            "<": lambda: left < right,
            "<=": lambda: left <= right,
        }[op]()
    except TypeError:
        return False
    return bool(outcome)


def _binary(name: str, op: str, raw: str) -> Predicate:
    if op == "~=":
        pattern = re.compile(str(_literal(raw)))
        return lambda v: isinstance(v.get(name), str) and bool(pattern.search(v[name]))
    if op in ("==", "!=") and ".." in raw:
        low, high = (_literal(part) for part in raw.split("..", 1))

        def in_range(v: Mapping[str, Any]) -> bool:
            return name in v and _compare(">=", v[name], low) and _compare("<=", v[name], high)

        return in_range if op == "==" else (lambda v: name in v and not in_range(v))
    if op in ("==", "!="):
        options = [_literal(part) for part in raw.split(",")]
        if op == "==":
            return lambda v: name in v and v[name] in options
        return lambda v: name in v and v[name] not in options
    right = _literal(raw)
    return lambda v: name in v and _compare(op, v[name], right)


def _statement(text: str) -> Predicate:
    match = _STATEMENT.match(text)
    if match:
        return _binary(*match.groups())
    name = text.strip()
    if name.startswith("!") and re.fullmatch(r"[A-Za-z0-9_:@\-]+", name[1:]):
        return lambda v: name[1:] not in v
    if re.fullmatch(r"[A-Za-z0-9_:@\-]+", name):
        return lambda v: name in v
    raise QueryError(f"invalid query statement: {text!r}")


def compile_q(q: str, *, ld: bool = False) -> Predicate:
    """A predicate over ``name → value`` (relationships: their target)."""
    if not q.strip():
        raise QueryError("empty q")
    alternatives = [
        [_statement(s) for s in alternative.split(";")]
        for alternative in (q.split("|") if ld else [q])
    ]
    return lambda values: any(all(p(values) for p in group) for group in alternatives)
