"""Strict, bounded JSON decoding for every input path, and what happens to JSON that cannot be
carried.

Every beat parses its source's JSON with :func:`loads` (MQTT payloads, FIWARE bodies, OpenCTI
frames, Ditto messages). It accepts RFC 8259 JSON whose every value survives re-encoding as
UTF-8 JSON unchanged, and raises :class:`~common.normalize.Rejected` otherwise:

* not JSON at all (including ``NaN``, ``Infinity`` and ``-Infinity``, which Python's ``json``
  accepts but JSON does not, and text that is not valid UTF-8): :class:`NotJson`;
* JSON that cannot be carried losslessly: :class:`Unrepresentable`, with the reason:

  - a string (or key) holding a lone UTF-16 surrogate (``"\\ud800"``): it has no UTF-8 form;
  - a number beyond the range of a double (``1e400``): it would become ``Infinity``;
  - an integer of more than :data:`MAX_INT_DIGITS` digits;
  - nesting deeper than ``max_depth`` (default :data:`MAX_DEPTH`), which also keeps every
    later encoder and recursive walk far from its limits;
  - an object with the same member name twice (``{"a": 1, "a": 2}``): a decoder keeps one of
    them (JavaScript's ``JSON.parse`` and Python's the last), so a value would silently go.

What a beat does with each is its choice, documented in docs/: the HiveMQ beat keeps an
unrepresentable payload byte for byte as ``data_base64`` with the reason in the ``datanote``
extension (an MQTT payload is opaque bytes); the other beats dead-letter the input (and the
FIWARE beat answers 400). Integers of any size up to :data:`MAX_INT_DIGITS` digits are kept
exact, as JSON allows (consumers in JavaScript read those beyond 2**53 approximately). The
NUL character and other control characters are valid JSON (escaped) and are kept.
"""

from __future__ import annotations

import json
import re
from typing import Any

from common.normalize import Rejected

__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "NotJson", "Unrepresentable", "loads", "too_deep"]

MAX_DEPTH = 64
"""Default nesting bound: deeper than any NGSI entity, STIX object or Ditto message, and far
below the encoders' limits (orjson 255, pydantic 255, CPython's recursion limit 1000)."""
MAX_INT_DIGITS = 4000
"""Longer integers are refused (CPython refuses to parse more than 4300 digits anyway)."""

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
_BIG_NUMBER = re.compile(r"\d{300}|[eE][+-]?\d{3}")
"""Text that may hold a number needing the checking hooks (they slow the decoder down)."""


class NotJson(Rejected):
    """The input is not JSON text."""


class Unrepresentable(Rejected):
    """The input is JSON, but part of it has no lossless UTF-8 JSON form (see the module)."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _Unrepresentable(f"the number {text[:40]} is beyond the range of a double")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Unrepresentable(f"an integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) < len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _Unrepresentable(f"the member name {name[:60]!r} appears twice in an object")
            seen.add(name)
    return value


class _Unrepresentable(Exception):
    """Raised from inside the decoder's hooks (anything else there becomes a ValueError)."""


def loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH, what: str = "input") -> Any:
    """Decode ``raw`` as strict JSON (see the module docstring); ``what`` names the input in
    the reason (``"payload"``, ``"frame data"`` ...)."""
    if isinstance(raw, bytes | bytearray):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotJson(f"{what} is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    else:
        text = raw
    try:
        if _BIG_NUMBER.search(text):
            value = json.loads(
                text,
                parse_constant=_no_constant,
                parse_float=_float,
                parse_int=_int,
                object_pairs_hook=_unique,
            )
        else:
            value = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique)
    except _Unrepresentable as exc:
        raise Unrepresentable(f"{what}: {exc}") from None
    except RecursionError:
        raise Unrepresentable(f"{what} nests deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise NotJson(f"{what} is not JSON: {str(exc)[:200]}") from None
    if _deep_candidate(text, max_depth) and too_deep(value, max_depth):
        raise Unrepresentable(f"{what} nests deeper than {max_depth} levels")
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise Unrepresentable(f"{what} holds a lone UTF-16 surrogate (no UTF-8 form)")
    return value


def _deep_candidate(text: str, max_depth: int) -> bool:
    """Cheap filter: text with at most ``max_depth`` brackets cannot nest deeper."""
    return text.count("[") + text.count("{") > max_depth


def too_deep(value: Any, max_depth: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests containers deeper than ``max_depth`` (iterative, no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth >= max_depth:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _has_lone_surrogate(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
