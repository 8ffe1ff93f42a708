"""Where a client resumes: the ids the gateway gives its SSE messages, and their parsing.

* A stream of one beat in URL mode: the beat's own sequence (``17``).
* ``/streams`` (merged): the position vector ``label=seq;label=seq``, one entry per upstream
  (label: the beat, or ``beat/channel`` for a token scoped to channels).
* Any stream read from Kafka: the same vector over topic-partitions
  (``beat/channel:partition=offset``), made compact and opaque: ``k`` + base64url of the vector
  with each topic's partitions grouped (:func:`encode_position`; compression would cost more
  than the rest of an event's delivery). Clients only hand it back as ``Last-Event-ID``; any
  gateway replica reading the same Kafka cluster understands it.

``0`` means everything still kept: from the beat's oldest event, or each partition's oldest
retained offset (``-1``, "after nothing", for a partition).
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Iterable

__all__ = ["decode_position", "encode_position", "named_positions", "parse_position"]

_GROUP = re.compile(r"\d+=-?\d+(,\d+=-?\d+)*")
_VECTOR_HELP = (
    "resume from this stream's own ids (label=seq;label=seq, for example hivemq=17;fiware=42, "
    "or the opaque id of a Kafka-mode stream), or from 0"
)


def encode_position(pairs: Iterable[tuple[str, int]]) -> str:
    """A position vector as an opaque, compact SSE id: ``k`` + base64url of the vector with the
    partitions of one topic grouped (``hivemq/messages:0=17,1=20;fiware/entities:0=3``)."""
    topics: dict[str, list[str]] = {}
    for label, value in pairs:
        key, entry = _split(label)
        topics.setdefault(key, []).append(f"{entry}{value}")
    text = ";".join(key + ",".join(entries) for key, entries in topics.items())
    return "k" + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@functools.lru_cache(maxsize=4096)
def _split(label: str) -> tuple[str, str]:
    """(group, entry prefix): ``("hivemq/messages:", "0=")`` for a partition's label,
    ``("hivemq", "=")`` for another."""
    topic, colon, partition = label.rpartition(":")
    if colon and partition.isdigit():
        return topic + ":", partition + "="
    return label, "="


def decode_position(raw: str) -> str:
    """The flat vector ``label=seq;label=seq`` of an id made by :func:`encode_position`
    (``ValueError`` if it is not one)."""
    body = raw[1:] + "=" * (-len(raw[1:]) % 4)
    try:
        text = base64.urlsafe_b64decode(body.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"not a position this gateway made ({exc})") from None
    flat: list[str] = []
    for part in text.split(";"):
        topic, colon, partitions = part.rpartition(":")
        if colon and _GROUP.fullmatch(partitions):
            flat.extend(f"{topic}:{entry}" for entry in partitions.split(","))
        else:
            flat.append(part)
    return ";".join(flat)


def parse_position(
    raw: str | None, labels: list[str], *, partitions: frozenset[str] = frozenset()
) -> dict[str, int | None]:
    """Each label's resume position from the client's id ``raw``: ``None`` (live) for every
    label when there is none; for ``0`` and for the labels a vector does not name, the start
    of what is kept: ``0`` for a beat, ``-1`` for a Kafka partition (in ``partitions``) —
    a partition a client's id does not name is newer than the client's position. A URL-mode
    label the vector does not name starts live."""
    positions: dict[str, int | None] = dict.fromkeys(labels)
    if raw is None or raw.strip() == "":
        return positions
    oldest = {label: (-1 if label in partitions else 0) for label in labels}
    if raw.strip() == "0":
        return {**oldest}
    named = named_positions(raw)
    return {
        label: named.get(label, oldest[label] if label in partitions else None) for label in labels
    }


def named_positions(raw: str | None) -> dict[str, int]:
    """The positions a client's id names, by label (none for no id, or ``0``; ``ValueError``
    if it is not an id)."""
    if raw is None or raw.strip() in ("", "0"):
        return {}
    return _vector(decode_position(raw) if raw.startswith("k") and "=" not in raw else raw)


def _vector(text: str) -> dict[str, int]:
    named: dict[str, int] = {}
    for part in text.split(";"):
        label, sep, value = part.strip().rpartition("=")
        digits = value[1:] if value.startswith("-") else value
        if not sep or not label or not digits.isdigit() or int(value) < -1:
            raise ValueError(_VECTOR_HELP)
        named[label] = int(value)
    return named
