"""The emulator's twins: Ditto's thing model and the events its changes produce. No I/O.

Resources follow Ditto's HTTP API below ``/api/2/things/{thingId}``: ``/`` (the thing),
``/policyId``, ``/definition``, ``/attributes[/<pointer>]``, ``/features[/<featureId>[/definition
|/properties[/<pointer>]|/desiredProperties[/<pointer>]]]``. ``PUT`` answers ``created`` when the
resource did not exist and ``modified`` otherwise, ``PATCH`` (RFC 7396 merge patch) ``merged``,
``DELETE`` ``deleted``. Each change bumps the thing's revision; revisions survive a deletion, so
a re-created thing goes on counting (as Ditto's journal does). The emulator is lenient where
Ditto is strict: missing intermediate objects below an existing thing are created.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from beats.ditto.protocol import MERGE_PATCH

__all__ = ["Change", "DittoError", "ThingStore", "merge_patch", "pointer", "public", "select"]

_ROOTS = frozenset({"policyId", "definition", "attributes", "features"})
_FEATURE_PARTS = frozenset({"definition", "properties", "desiredProperties"})


class DittoError(Exception):
    """A failed request, answered with Ditto's error JSON (``status``, ``error``, ``message``)."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message

    def json(self) -> dict[str, Any]:
        return {"status": self.status, "error": self.error, "message": self.message}


@dataclass(frozen=True)
class Change:
    """One applied change: the twin event it becomes and the thing state after it."""

    thing_id: str
    action: str
    path: str
    value: Any
    has_value: bool
    revision: int
    timestamp: str
    thing: Mapping[str, Any] | None
    """The whole thing after the change (``None`` once the thing is deleted)."""
    headers: Mapping[str, Any] = field(default_factory=dict)

    def event(self) -> dict[str, Any]:
        """The Ditto protocol twin event (``…/things/twin/events/<action>``)."""
        namespace, name = self.thing_id.split(":", 1)
        message: dict[str, Any] = {
            "topic": f"{namespace}/{name}/things/twin/events/{self.action}",
            "headers": dict(self.headers),
            "path": self.path,
            "revision": self.revision,
            "timestamp": self.timestamp,
        }
        if self.has_value:
            message["value"] = self.value
        return message


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def pointer(path: str) -> list[str]:
    """``/a/b~1c`` → ``["a", "b/c"]`` (RFC 6901); ``/`` → ``[]``."""
    return [p.replace("~1", "/").replace("~0", "~") for p in path.strip("/").split("/") if p]


def public(thing: Mapping[str, Any]) -> dict[str, Any]:
    """A stored thing without the emulator's ``_revision``/``_modified``/``_created``."""
    return {k: v for k, v in thing.items() if not k.startswith("_")}


def select(thing: Mapping[str, Any], selectors: str | tuple[str, ...]) -> dict[str, Any]:
    """A partial thing with the selected pointers (Ditto's ``fields`` / ``extraFields``):
    ``attributes/a,thingId`` → ``{"attributes": {"a": ...}, "thingId": ...}``; missing ones
    are left out."""
    if isinstance(selectors, str):
        selectors = tuple(selectors.split(","))
    picked: dict[str, Any] = {}
    for selector in selectors:
        parts, node = pointer(selector), cast(Any, thing)
        for part in parts:
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is None or not parts:
            continue
        target = picked
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = node
    return picked


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: ``null`` removes, objects merge, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def check_thing_id(thing_id: str) -> None:
    """``namespace:name``, both non-empty, printable, no ``/`` (Ditto's entity id rules)."""
    namespace, _, name = thing_id.partition(":")
    if not namespace or not name or "/" in thing_id or not thing_id.isprintable():
        raise DittoError(400, "things:id.invalid", f"The Thing ID '{thing_id}' is not valid!")


def _check_path(parts: list[str]) -> None:
    if not parts:
        return
    valid = parts[0] in _ROOTS and (parts[0] in ("attributes", "features") or len(parts) == 1)
    if parts[0] == "features" and len(parts) > 2:
        valid = parts[2] in _FEATURE_PARTS and (parts[2] != "definition" or len(parts) == 3)
    if not valid:
        raise DittoError(404, "things:resource.notfound", f"No resource '/{'/'.join(parts)}'.")


class ThingStore:
    """Things by id, with revisions that outlive deletion."""

    def __init__(self, originator: str = "nginx:ditto") -> None:
        self.things: dict[str, dict[str, Any]] = {}
        self.revisions: dict[str, int] = {}
        self.originator = originator

    def get(self, thing_id: str, path: str = "/") -> Any:
        thing = self._existing(thing_id)
        parts = pointer(path)
        _check_path(parts)
        node: Any = public(thing)
        for part in parts:
            if not isinstance(node, dict) or part not in node:
                raise DittoError(404, _not_found(parts), f"'{path}' of '{thing_id}' not found.")
            node = node[part]
        return node

    def put(self, thing_id: str, path: str, value: Any, **headers: Any) -> Change:
        check_thing_id(thing_id)
        parts = pointer(path)
        _check_path(parts)
        if not parts:
            return self._put_thing(thing_id, value, headers)
        node = self._existing(thing_id)
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        action = "modified" if parts[-1] in node else "created"
        node[parts[-1]] = value
        return self._change(thing_id, action, path, value, headers)

    def merge(self, thing_id: str, path: str, patch: Any, **headers: Any) -> Change:
        thing = self._existing(thing_id)
        parts = pointer(path)
        _check_path(parts)
        if not parts and not isinstance(patch, dict):
            raise DittoError(400, "things:thing.merge.invalid", "A thing patch is an object.")
        wrapped: Any = patch
        for part in reversed(parts):
            wrapped = {part: wrapped}
        merged = merge_patch(thing, {k: v for k, v in wrapped.items() if k != "thingId"})
        thing.clear()
        thing.update(merged, thingId=thing_id)
        headers.setdefault("content-type", MERGE_PATCH)
        return self._change(thing_id, "merged", path, patch, headers)

    def delete(self, thing_id: str, path: str = "/", **headers: Any) -> Change:
        thing = self._existing(thing_id)
        parts = pointer(path)
        _check_path(parts)
        if not parts:
            del self.things[thing_id]
            return self._change(thing_id, "deleted", "/", None, headers, has_value=False)
        parent: Any = thing
        for part in parts[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or parts[-1] not in parent:
            raise DittoError(404, _not_found(parts), f"'{path}' of '{thing_id}' not found.")
        del parent[parts[-1]]
        return self._change(thing_id, "deleted", path, None, headers, has_value=False)

    def _put_thing(self, thing_id: str, value: Any, headers: dict[str, Any]) -> Change:
        if not isinstance(value, dict):
            raise DittoError(400, "things:thing.invalid", "A thing is a JSON object.")
        if value.get("thingId", thing_id) != thing_id:
            raise DittoError(400, "things:id.notsettable", "The thingId differs from the URL.")
        existed = thing_id in self.things
        previous = self.things.get(thing_id, {})
        thing = {"thingId": thing_id, "policyId": thing_id, **public(value)}
        thing["_created"] = previous.get("_created") or now()
        self.things[thing_id] = thing
        action = "modified" if existed else "created"
        return self._change(thing_id, action, "/", public(thing), headers)

    def _existing(self, thing_id: str) -> dict[str, Any]:
        thing = self.things.get(thing_id)
        if thing is None:
            raise DittoError(
                404,
                "things:thing.notfound",
                f"The Thing with ID '{thing_id}' could not be found or requester had "
                "insufficient permissions to access it.",
            )
        return thing

    def _change(
        self,
        thing_id: str,
        action: str,
        path: str,
        value: Any,
        headers: Mapping[str, Any],
        *,
        has_value: bool = True,
    ) -> Change:
        revision = self.revisions.get(thing_id, 0) + 1
        self.revisions[thing_id] = revision
        timestamp = now()
        thing = self.things.get(thing_id)
        if thing is not None:
            thing["_revision"], thing["_modified"] = revision, timestamp
        return Change(
            thing_id=thing_id,
            action=action,
            path="/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in pointer(path)),
            value=value,
            has_value=has_value,
            revision=revision,
            timestamp=timestamp,
            thing=dict(thing) if thing is not None else None,
            headers=self._headers(headers, has_value),
        )

    def _headers(self, given: Mapping[str, Any], has_value: bool) -> dict[str, Any]:
        headers: dict[str, Any] = {
            "correlation-id": given.get("correlation-id") or str(uuid.uuid4()),
            "ditto-originator": given.get("ditto-originator") or self.originator,
            "response-required": False,
            "version": 2,
            "requested-acks": [],
        }
        if has_value:
            headers["content-type"] = given.get("content-type") or "application/json"
        return headers


def _not_found(parts: list[str]) -> str:
    if parts and parts[0] == "features":
        return "things:feature.notfound" if len(parts) <= 2 else "things:feature.property.notfound"
    if parts and parts[0] == "attributes":
        return "things:attribute.notfound"
    return "things:resource.notfound"
