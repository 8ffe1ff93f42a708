"""OpenCTI live-stream frame → CloudEvents. Pure: no I/O, total (bad input raises ``Rejected``).

One ``create``/``update``/``delete``/``merge`` frame becomes one event of type
``beats.opencti.<kind>`` (the SSE event name; a live stream sends an update that makes an
object enter or leave its filters as ``create`` / ``delete``, and that is what its consumers
see). ``connected``, ``heartbeat`` and OpenCTI 4.x's ``sync`` carry no data and become none
(the source uses them for readiness and its resume position).

The "moderate transformation" keeps the full STIX 2.1 object in ``data.stix`` and adds:

* ``data.opencti``: the OpenCTI extension (``extensions["extension-definition--ea279b3e-…"]``)
  lifted into flat fields: ``id``, ``entity_type``, ``score``, ``detection``, ``created_at``,
  ``updated_at``, ``is_inferred``, ``creator_ids``, ``stix_ids``, ``main_observable_type``;
  ``source_type`` / ``target_type`` / ``source_value`` / ``target_value`` for relationships,
  ``sighting_of_type`` / ``where_sighted_types`` for sightings (only those present);
* ``data.kind``, ``data.recorded_kind`` (the event's own ``type``), ``data.stream_id``,
  ``data.event_id`` (a live stream's own ``event_id``), ``data.message``,
  ``data.origin_user_id``, ``data.origin_referer`` (``dependencies``, ``init``, …) and
  ``data.origin`` whole, ``data.version``, ``data.scope``, ``data.context`` as sent
  (``deletions`` for deletes, ``sources`` for merges);
* for updates and merges, and whenever the context has a ``reverse_patch``: ``data.patch`` and
  ``data.reverse_patch`` (RFC 6902), and ``data.previous``, the object before the change:
  ``reverse_patch`` applied to the new object, as OpenCTI itself computes it
  (``data.previous_error`` says why when that is not possible);
* extensions ``tlp`` and ``stixtype``. ``tlp`` is on every event: the most restrictive TLP of
  *everything the event carries* (:func:`~beats.opencti.stix.marking_refs`): the object, its
  previous version, merge sources, deleted objects, patches and OpenCTI's
  ``related_restrictions``. A marking id neither standard nor in ``markings`` counts as red;
  PAP and statement markings do not restrict; no restricting marking at all is ``clear``
  (OpenCTI shows unmarked objects to every user).

``subject`` and ``partitionkey`` are the STIX id. ``id`` is ``<stream id>/<kind>/<STIX id>``:
the stream id alone is not enough (several frames share one), and the live stream's
``event_id`` is not stable (OpenCTI derives it from ``updated_at`` and the frame's index in the
batch it happened to read), so it is kept as data only. A frame read again after a reconnect
gets the same id and the log drops it as a duplicate. A frame without ``id:`` (never sent by
OpenCTI for data) gets ``sha256:<digest of its data>`` in place of the stream id.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import jsonpatch

from beats.opencti.frames import CONTROL_KINDS, DATA_KINDS, Frame
from beats.opencti.stix import OCTI_EXTENSION, channel_for, marking_refs, tlp_of_refs
from common import jsonsafe
from common.envelope import CloudEvent, new_event
from common.jsonsafe import loads
from common.normalize import Rejected, parse_time

__all__ = ["CONTROL_KINDS", "DATA_KINDS", "MAX_DEPTH", "Frame", "event_id", "normalize"]

MAX_DEPTH = jsonsafe.MAX_DEPTH
"""Deeper JSON is rejected (:mod:`common.jsonsafe`): no STIX object nests that far."""

_BAD_PATCH = (TypeError, KeyError, IndexError, ValueError, AttributeError, RecursionError)
_LIFTED = (
    "id",
    "type",
    "score",
    "detection",
    "created_at",
    "updated_at",
    "is_inferred",
    "creator_ids",
    "stix_ids",
    "main_observable_type",
    "source_type",
    "target_type",
    "source_value",
    "target_value",
    "sighting_of_type",
    "where_sighted_types",
)


def normalize(
    frame: Frame,
    *,
    source: str,
    channels: Mapping[str, str] | None = None,
    markings: Mapping[str, str] | None = None,
    received_at: datetime | None = None,
) -> list[CloudEvent]:
    """The events of one frame. ``source`` is the stream URL (the CloudEvents ``source``);
    ``channels`` maps STIX types to channels over the defaults (:data:`stix.DEFAULT_CHANNELS`);
    ``markings`` maps marking-definition ids the beat knows (from the stream or the platform)
    to their levels (:func:`~beats.opencti.stix.marking_level`), for ids that are not the
    standard TLP ones. ``received_at``: when the beat read the frame, the event's ``time`` when
    neither the object nor the stream id says when the change happened."""
    if frame.kind in CONTROL_KINDS:
        return []
    if frame.oversize:
        raise Rejected(f"frame data of {frame.oversize} bytes, over the beat's bound "
                       "(--opencti-max-frame-bytes): its first 64 KiB are kept")  # fmt: skip
    if frame.kind not in DATA_KINDS:
        raise Rejected(f"unknown stream event kind {frame.kind!r}")
    payload = _parse(frame.data)
    stix: dict[str, Any] = payload["data"]
    stix_id: str = stix["id"]
    data = _data(frame, payload, stix)
    refs = marking_refs(payload) | marking_refs(data.get("previous"))
    extensions = {"stixtype": stix["type"], "tlp": tlp_of_refs(refs, markings or {})}
    return [
        new_event(
            beat="opencti",
            type=f"beats.opencti.{frame.kind}",
            source=source,
            channel=channel_for(stix["type"], channels or {}),
            subject=stix_id,
            partitionkey=stix_id,
            id=event_id(frame, stix_id),
            time=_time(stix, frame) or received_at,
            data=data,
            **extensions,
        )
    ]


def event_id(frame: Frame, stix_id: str) -> str:
    """The CloudEvent id of a data frame: stable across re-reads of the same frame."""
    position = frame.id or "sha256:" + hashlib.sha256(frame.data.encode()).hexdigest()
    return f"{position}/{frame.kind}/{stix_id}"


def _parse(text: str) -> dict[str, Any]:
    payload = loads(text, what="frame data")
    if not isinstance(payload, dict):
        raise Rejected("frame data is not a JSON object")
    stix = payload.get("data")
    if not isinstance(stix, dict):
        raise Rejected("frame has no STIX object in 'data'")
    for key in ("id", "type"):
        if not isinstance(stix.get(key), str) or not stix[key]:
            raise Rejected(f"the STIX object has no string '{key}'")
    return payload


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def lifted(stix: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenCTI extension's fields, flat; its ``type`` becomes ``entity_type``."""
    extension = _dict(_dict(stix.get("extensions")).get(OCTI_EXTENSION))
    fields = {key: extension[key] for key in _LIFTED if key in extension}
    if "type" in fields:
        fields["entity_type"] = fields.pop("type")
    return fields


def _time(stix: dict[str, Any], frame: Frame) -> datetime | None:
    """When the change happened: OpenCTI's ``updated_at``, else STIX ``modified``, else the
    stream id's time."""
    extension = _dict(_dict(stix.get("extensions")).get(OCTI_EXTENSION))
    updated = parse_time(extension.get("updated_at")) or parse_time(stix.get("modified"))
    if updated is not None:
        return updated
    position = frame.stream_id
    try:
        return position.time() if position is not None else None
    except (OverflowError, OSError, ValueError):
        return None


def _data(frame: Frame, payload: dict[str, Any], stix: dict[str, Any]) -> dict[str, Any]:
    origin = _dict(payload.get("origin"))
    context = _dict(payload.get("context"))
    data: dict[str, Any] = {
        "kind": frame.kind,
        "recorded_kind": payload.get("type"),
        "stream_id": frame.id,
        "event_id": payload.get("event_id"),
        "message": payload.get("message"),
        "origin_user_id": origin.get("user_id"),
        "origin_referer": origin.get("referer"),
        "origin": payload.get("origin", {}),  # as sent, whatever its type
        "version": payload.get("version"),
        "scope": payload.get("scope"),
        "opencti": lifted(stix),
        "stix": stix,
        "context": payload.get("context", {}),
    }
    if frame.kind in ("update", "merge") or "reverse_patch" in context:
        data["patch"] = context.get("patch")
        data["reverse_patch"] = context.get("reverse_patch")
        data.update(_previous(stix, context.get("reverse_patch")))
    return data


def _previous(stix: dict[str, Any], reverse_patch: Any) -> dict[str, Any]:
    if not isinstance(reverse_patch, list):
        return {"previous": None, "previous_error": "no reverse_patch in the frame"}
    try:
        previous = jsonpatch.apply_patch(copy.deepcopy(stix), reverse_patch)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, *_BAD_PATCH) as exc:
        return {"previous": None, "previous_error": f"reverse_patch does not apply: {exc}"}
    return {"previous": previous}
