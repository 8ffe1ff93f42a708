"""The hostile inputs, as data: each with a name, the exact bytes sent and why it is hostile.

:data:`VALUES` are JSON value texts (some not JSON at all): each is sent as a whole input (an
MQTT payload, a FIWARE body, an OpenCTI frame's data, a Ditto frame) and also placed, byte for
byte, at a value position inside a beat's normal input (:func:`embed`), so that it reaches the
code past the envelope checks. :data:`DOCUMENTS` only make sense whole (empty, truncated, a BOM).
:func:`wrong_types` gives, for a beat's normal input, the same input with each member at every
level replaced by each JSON type it does not have. :func:`huge_string` builds inputs just under
and just over a beat's size limit.

``value`` is what the text means when it is strict RFC 8259 JSON that a JSON consumer reads back
unchanged (unique keys, no ``NaN``, numbers within a double or exact integers, UTF-8 text): such
an input may be committed as JSON ``data``. Every other input can only be kept losslessly byte
for byte (``data_base64``, or the text itself as a string), dead-lettered with its reason, or
refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CORPUS",
    "DOCUMENTS",
    "NOT_JSON",
    "VALUES",
    "BigInt",
    "Corpus",
    "Sample",
    "embed",
    "huge_string",
    "nested",
    "strict_error",
    "strict_loads",
    "wrong_types",
]


class _NotJson:
    def __repr__(self) -> str:
        return "NOT_JSON"


NOT_JSON: Any = _NotJson()
"""``Sample.value`` of an input that is not faithful JSON (see the module docstring)."""


class BigInt(str):
    """An integer too long for Python's ``int()`` (over 4,300 digits), kept as its digits."""


def _parse_int(text: str) -> int | BigInt:
    return BigInt(text) if len(text.lstrip("-")) > 4000 else int(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate keys")
    return dict(pairs)


def strict_loads(raw: bytes | str) -> Any:
    """Strict JSON: ``ValueError`` for ``NaN``/``Infinity``, duplicate keys, numbers beyond a
    double, lone surrogates and text that is not UTF-8; long integers come back as
    :class:`BigInt`. What a consumer of the beats' output may rely on."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    value = json.loads(
        text,
        parse_constant=_refuse_constant,
        parse_int=_parse_int,
        parse_float=_finite,
        object_pairs_hook=_unique,
    )
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # UnicodeEncodeError: lone surrogate
    return value


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:20]} is beyond a double")
    return value


def strict_error(raw: bytes) -> str | None:
    """Why ``raw`` is not strict JSON (see :func:`strict_loads`), ``None`` when it is."""
    try:
        strict_loads(raw)
    except (ValueError, RecursionError) as exc:
        return f"{type(exc).__name__}: {str(exc)[:100]}"
    return None


@dataclass(frozen=True)
class Sample:
    name: str
    raw: bytes
    why: str

    @property
    def value(self) -> Any:
        """The JSON value, or :data:`NOT_JSON`."""
        try:
            return strict_loads(self.raw)
        except (ValueError, RecursionError):
            return NOT_JSON


def nested(depth: int, *, inner: bytes = b"") -> bytes:
    """``depth`` arrays, one in another."""
    return b"[" * depth + inner + b"]" * depth


def _nested_objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def huge_string(size: int) -> bytes:
    """A JSON string text of exactly ``size`` bytes."""
    return b'"' + b"x" * (size - 2) + b'"'


VALUES: tuple[Sample, ...] = (
    Sample(
        "lone-surrogate-escape",
        b'"\\ud800"',
        "valid JSON text whose string has no UTF-8 form; one 8-byte MQTT message stopped a beat",
    ),
    Sample("lone-low-surrogate-escape", b'"a\\udc00b"', "a low surrogate alone, mid-string"),
    Sample("reversed-surrogate-pair", b'"\\udc00\\ud800"', "a pair in the wrong order"),
    Sample(
        "surrogate-pair-escape",
        b'"\\ud83d\\ude00"',
        "a correct pair (an emoji): must not be mistaken for a lone surrogate",
    ),
    Sample(
        "utf8-encoded-surrogate",
        b'"\xed\xa0\x80"',
        "a surrogate encoded as UTF-8 bytes (ED A0 80, CESU/WTF-8): not UTF-8",
    ),
    Sample("nan", b"NaN", "not JSON, but Python's json reads it (and writes it back)"),
    Sample("infinity", b"Infinity", "not JSON, but Python's json reads it"),
    Sample("minus-infinity", b"-Infinity", "not JSON, but Python's json reads it"),
    Sample("number-beyond-double", b"1e400", "JSON, but a double makes it Infinity"),
    Sample("negative-beyond-double", b"-1e400", "JSON, but a double makes it -Infinity"),
    Sample("integer-20-digits", b"98765432109876543210", "beyond 2**64: kept exact or not"),
    Sample(
        "integer-5000-digits",
        b"9" * 5000,
        "JSON, but Python refuses to read integers over 4,300 digits (ValueError)",
    ),
    Sample("nested-64", nested(64), "64 levels: within every parser's bounds"),
    Sample("nested-255", nested(255), "orjson's and pydantic's limit"),
    Sample("nested-256", nested(256), "one past orjson's and pydantic's limit"),
    Sample("nested-objects-256", _nested_objects(256), "objects one past the encoders' limit"),
    Sample("nested-1000", nested(1000), "past CPython's recursion limit"),
    Sample("nested-100000", nested(100_000), "200 KB of brackets: crashed a source in a loop"),
    Sample("raw-nul-in-string", b'"a\x00b"', "a raw NUL: JSON requires control chars escaped"),
    Sample("raw-controls-in-string", b'"\x01\x07\x1b\x1f"', "raw control characters"),
    Sample("escaped-nul", b'"a\\u0000b"', "NUL, escaped: valid JSON, breaks C strings"),
    Sample("escaped-controls", b'"\\u0001\\u001f\\u007f\\b\\f"', "escaped control characters"),
    Sample("duplicate-keys", b'{"a":1,"a":2}', "last-wins parsing silently drops a value"),
    Sample(
        "line-separators",
        '"a\u2028b\u2029c\u0085d"'.encode(),
        "raw U+2028/2029/0085: line breaks to JavaScript and Python, not to JSON or SSE",
    ),
    Sample("line-separators-escaped", b'"\\u2028\\u2029\\u0085"', "the same characters, escaped"),
    Sample("invalid-utf8", b'"\xff\xfe\xfd"', "bytes that are never UTF-8"),
    Sample("overlong-utf8", b'"\xc0\xaf"', "an overlong encoding of '/'"),
    Sample("truncated-utf8", b'"\xe2\x82"', "a multi-byte sequence cut short"),
    Sample("truncated-json", b'{"a": [1, 2', "a body cut off mid-way"),
    Sample("unterminated-string", b'"abc', "a string that never ends"),
)

DOCUMENTS: tuple[Sample, ...] = (
    Sample("empty", b"", "an empty body"),
    Sample("whitespace", b" \r\n\t ", "nothing but whitespace"),
    Sample("bom", b'\xef\xbb\xbf{"a":1}', "a UTF-8 byte order mark, which JSON forbids"),
    Sample("trailing-garbage", b'{"a":1} {"b":2}', "two documents in one"),
    Sample("root-null", b"null", "a bare null"),
)

REDELIVERED_NAMES: tuple[str, ...] = (
    "lone-surrogate-escape",
    "nan",
    "number-beyond-double",
    "nested-256",
    "nested-100000",
    "invalid-utf8",
    "escaped-nul",
)
"""The inputs sent again after a kill -9 and a restart on the same data directory (the ones
that, in issue 16, froze a beat or made it crash in a loop, and the lossless kinds)."""


@dataclass(frozen=True)
class Corpus:
    """What a scenario sends: ``values`` whole and embedded, ``documents`` whole, and after the
    restart ``redelivered``; ``extras``: also each beat's own inputs (mistyped members, sizes
    around its limit, long ids)."""

    values: tuple[Sample, ...]
    documents: tuple[Sample, ...] = ()
    redelivered: tuple[Sample, ...] = ()
    extras: bool = False


CORPUS = Corpus(
    VALUES,
    DOCUMENTS,
    tuple(s for s in VALUES if s.name in REDELIVERED_NAMES),
    extras=True,
)


def embed(template: bytes, sample: Sample) -> bytes:
    """``template`` with its ``@@`` replaced by the sample's bytes, unchanged."""
    if template.count(b"@@") != 1:
        raise ValueError("a template has one @@")
    return template.replace(b"@@", sample.raw)


_WRONG: tuple[Any, ...] = (None, True, 0, -1.5, "", "x", [], [1], {}, {"x": 1})


def _kind(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value)
    if value in ("", [], {}):
        return f"empty {type(value).__name__}"
    return type(value).__name__


def wrong_types(document: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """``(where, document)`` for each member at every level of ``document`` replaced by each
    JSON type it is not (the root included): ``where`` is a JSON-pointer-like path and the
    replacement."""
    for replacement in _WRONG:
        if _kind(replacement) != _kind(document):
            yield f"{path or '/'}={json.dumps(replacement)}", replacement
    children: list[tuple[str | int, Any]] = []
    if isinstance(document, dict):
        children = list(document.items())
    elif isinstance(document, list):
        children = list(enumerate(document))
    for key, child in children:
        for where, changed in wrong_types(child, f"{path}/{key}"):
            copy: Any = dict(document) if isinstance(document, dict) else list(document)
            copy[key] = changed
            yield where, copy
