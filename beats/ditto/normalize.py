"""Ditto Protocol message → CloudEvents. Pure: no I/O, total (bad input raises ``Rejected``).

===========================================  ===============================  =======
Ditto message                                CloudEvent ``type``              channel
===========================================  ===============================  =======
``…/things/twin/events/<action>``            ``beats.ditto.twin.<action>``    twin
``…/things/twin/events/merged``, value null  ``beats.ditto.twin.deleted``     twin
``…/things/live/events/<action>``            ``beats.ditto.live.<action>``    live
``…/things/live/messages/<subject>``         ``beats.ditto.live.message``     live
the same with a ``status`` (a reply)         ``beats.ditto.live.response``    live
``…/things/live/commands/<action>``          ``beats.ditto.live.command``     live
``…/things/<channel>/errors``, or any other  ``beats.ditto.error``            topic's
non-message frame with ``status`` ≥ 400                                       (twin)
a thing read over HTTP (``snapshot_event``)  ``beats.ditto.twin.snapshot``    twin
===========================================  ===============================  =======

``<action>`` is one of ``created``, ``modified``, ``merged``, ``deleted``, ``migrated``. A
``merged`` event whose ``value`` is ``null`` deletes the addressed part (JSON merge patch) and is
typed ``deleted`` with ``data.merge_deletion = true``. Search signals, acknowledgements,
announcements and anything outside the ``things`` group yield no event. Nothing here answers a
live message: the beat only listens.

``data`` keeps everything Ditto sent (``topic``, ``path``, ``value`` — absent, null, scalar,
string or object —, ``revision``, ``timestamp``, ``headers``, ``extra``, ``fields``,
``status``) and adds ``thing_id``, ``action`` or ``subject``, ``correlation_id``,
``originator`` and ``content_type`` (from the headers, case-insensitive), and what the path says:
``feature_id``, ``property_path`` / ``desired_property_path``, ``attribute_path`` and, for
messages, ``direction`` (``inbox``: to the thing, ``outbox``: from it).

``subject`` = ``partitionkey`` = the thing id. A ``_/_/…`` topic (about no particular thing) has
no ``subject`` and the partition key ``_:_``. ``time`` = Ditto's ``timestamp`` (top level, else
the message header), else when the beat received it. Ids are stable across redelivery:
``<thing>@<revision>/<action>/<channel>`` for events, ``<thing>/<type>/<correlation-id>/<digest>``
for the rest (the digest of the whole frame), ``<thing>/<type>/<digest>`` without a
correlation-id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from beats.ditto.protocol import (
    EVENT_ACTIONS,
    Envelope,
    ProtocolError,
    parse_envelope,
)
from common.envelope import CloudEvent, new_event
from common.jsonsafe import MAX_DEPTH, too_deep
from common.normalize import Rejected, parse_time

__all__ = ["MAX_DEPTH", "WILDCARD_KEY", "normalize", "snapshot_event"]

BEAT = "ditto"
WILDCARD_KEY = "_:_"
_IGNORED = frozenset({"search", "acks", "announcements", "streaming"})


def normalize(
    message: Mapping[str, Any],
    *,
    source: str,
    received_at: datetime | None = None,
    depth_checked: bool = False,
) -> list[CloudEvent]:
    """One decoded Ditto Protocol frame → zero or one CloudEvent; ``Rejected`` if malformed.
    ``received_at`` is the event ``time`` when the frame has no ``timestamp``;
    ``depth_checked`` says the frame was decoded by :func:`common.jsonsafe.loads`, which
    already bounds its nesting (else the whole frame is walked to check it)."""
    if not isinstance(message, Mapping):
        raise Rejected("Ditto message is not a JSON object")
    try:
        envelope = parse_envelope(message)
    except ProtocolError as exc:
        raise Rejected(str(exc)) from None
    if not depth_checked:
        _check_depth(message)
    classified = _classify(envelope)
    if classified is None:
        return []
    event_type, channel, action = classified
    data = _data(envelope)
    if action == "deleted" and envelope.topic.rest == "merged":
        data["merge_deletion"] = True
    thing_id = envelope.topic.thing_id
    return [
        new_event(
            beat=BEAT,
            type=event_type,
            source=source,
            channel=channel,
            subject=thing_id,
            partitionkey=thing_id or WILDCARD_KEY,
            id=_event_id(envelope, event_type),
            time=parse_time(envelope.timestamp or envelope.header("timestamp")) or received_at,
            data=data,
        )
    ]


def _classify(envelope: Envelope) -> tuple[str, str, str | None] | None:
    """(type, channel, event action) for a frame, ``None`` for frames that are not republished."""
    topic = envelope.topic
    channel = topic.channel or "twin"
    if topic.group != "things":
        return None
    failed = envelope.status is not None and envelope.status >= 400
    if topic.criterion == "errors" or (failed and topic.criterion != "messages"):
        return "beats.ditto.error", channel, None
    if topic.criterion in _IGNORED:
        return None
    if topic.criterion == "events":
        if topic.rest not in EVENT_ACTIONS:
            raise Rejected(f"unknown event action {topic.rest!r}")
        action = topic.rest
        if action == "merged" and envelope.has_value and envelope.value is None:
            action = "deleted"
        return f"beats.ditto.{channel}.{action}", channel, action
    if channel == "live" and topic.criterion in ("messages", "commands"):
        if envelope.status is not None:
            return "beats.ditto.live.response", "live", None
        kind = "message" if topic.criterion == "messages" else "command"
        return f"beats.ditto.live.{kind}", "live", None
    raise Rejected(f"unsupported Ditto message: {topic.criterion!r} on channel {channel!r}")


def _data(envelope: Envelope) -> dict[str, Any]:
    raw, topic = envelope.raw, envelope.topic
    data: dict[str, Any] = {
        key: raw[key]
        for key in ("topic", "path", "value", "revision", "timestamp", "extra", "fields", "status")
        if key in raw
    }
    data["headers"] = dict(envelope.headers)
    data["thing_id"] = topic.thing_id
    data["correlation_id"] = envelope.header("correlation-id")
    data["originator"] = envelope.header("ditto-originator")
    data["content_type"] = envelope.header("content-type")
    data.update(_path_parts(envelope.path))
    if topic.criterion == "messages":
        data["subject"] = topic.rest
        if "direction" not in data:
            direction = envelope.header("ditto-message-direction")
            if direction in ("TO", "FROM"):
                data["direction"] = "inbox" if direction == "TO" else "outbox"
    else:
        data["action"] = topic.rest or None
    return data


def _path_parts(path: str) -> dict[str, Any]:
    """What a resource or message path addresses: feature, property, attribute, mailbox."""
    parts = [p for p in path.split("/") if p]
    found: dict[str, Any] = {}
    if len(parts) >= 2 and parts[0] == "features":
        found["feature_id"] = parts[1]
        if len(parts) > 3 and parts[2] == "properties":
            found["property_path"] = "/".join(parts[3:])
        elif len(parts) > 3 and parts[2] == "desiredProperties":
            found["desired_property_path"] = "/".join(parts[3:])
        parts = parts[2:]
    elif len(parts) >= 2 and parts[0] == "attributes":
        found["attribute_path"] = "/".join(parts[1:])
    if len(parts) >= 2 and parts[0] in ("inbox", "outbox") and parts[1] == "messages":
        found["direction"] = parts[0]
    return found


def _event_id(envelope: Envelope, event_type: str) -> str:
    """Twin and live events: ``<thing>@<revision>/<action>/<channel>``. Everything else
    (messages, responses, commands, errors): ``<thing>/<type>/<correlation-id>/<digest>``, the
    digest of the whole frame (topic, path, headers, value, status, …): two different frames
    sharing a correlation-id (a question and its answer, or a client reusing one) get two ids, a
    frame seen again gets the same one."""
    topic = envelope.topic
    thing = topic.thing_id or WILDCARD_KEY
    if topic.criterion == "events" and envelope.revision is not None:
        return f"{thing}@{envelope.revision}/{topic.rest}/{topic.channel or 'twin'}"
    text = json.dumps(envelope.raw, sort_keys=True, default=str, ensure_ascii=False)
    digest = hashlib.sha256(text.encode()).hexdigest()
    correlation = envelope.header("correlation-id")
    if isinstance(correlation, str) and correlation:
        return f"{thing}/{event_type}/{correlation}/{digest[:16]}"
    return f"{thing}/{event_type}/{digest[:32]}"


def _check_depth(value: Any) -> None:
    if too_deep(value, MAX_DEPTH):
        raise Rejected(f"Ditto message nests deeper than {MAX_DEPTH} levels")


def snapshot_event(
    thing: Mapping[str, Any],
    *,
    source: str,
    reason: str = "reconnect",
    observed_at: datetime | None = None,
    session: int | str | None = None,
) -> CloudEvent:
    """A ``beats.ditto.twin.snapshot`` of a thing read over Ditto's HTTP API.

    It says "state may have changed while we were away" (after a reconnect, Ditto replays
    nothing), as opposed to a twin event, which says that it did change. ``thing`` is the Thing
    JSON, best fetched with ``fields=...,_revision,_modified``. ``observed_at`` (default: now)
    is when it was read; the id is ``<thing>@<revision>/snapshot/<session>`` when the caller
    names its session (deterministic), else it includes ``observed_at``, so every reconciliation
    is its own event. ``time`` is the thing's ``_modified``, else ``observed_at``.
    """
    thing_id = _snapshot_thing_id(thing)
    revision = thing.get("_revision")
    if not isinstance(revision, int) or isinstance(revision, bool):
        revision = None
    observed = observed_at or datetime.now(UTC)
    suffix = str(session) if session is not None else f"{observed.timestamp():.6f}"
    data: dict[str, Any] = {
        "thing_id": thing_id,
        "reason": reason,
        "revision": revision,
        "modified": thing.get("_modified"),
        "observed_at": observed.isoformat(),
        "thing": dict(thing),
    }
    return new_event(
        beat=BEAT,
        type="beats.ditto.twin.snapshot",
        source=source,
        channel="twin",
        subject=thing_id,
        partitionkey=thing_id,
        id=f"{thing_id}@{revision}/snapshot/{suffix}",
        time=parse_time(thing.get("_modified")) or observed,
        data=data,
    )


def _snapshot_thing_id(thing: Any) -> str:
    if not isinstance(thing, Mapping):
        raise Rejected("thing is not a JSON object")
    thing_id = thing.get("thingId")
    if not isinstance(thing_id, str) or not all(thing_id.partition(":")[::2]):
        raise Rejected("thing has no 'thingId' of the form namespace:name")
    _check_depth(thing)
    return thing_id
