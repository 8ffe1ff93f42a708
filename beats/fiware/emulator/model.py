"""The emulated broker's data: entities, subscriptions, changes, errors. No I/O.

Tenants and service paths follow ``orion-api.md`` § Multi tenancy / Service path: the tenant
(``Fiware-Service``, LD ``NGSILD-Tenant``) is lower-cased, alphanumeric and ``_``, at most 50
characters; an entity belongs to exactly one service path (``/`` by default); queries and
subscriptions without ``Fiware-ServicePath`` cover ``/#`` (every path).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "Change",
    "Entity",
    "LdError",
    "OrionError",
    "Subscription",
    "in_scope",
    "now",
    "parse_scope",
    "parse_tenant",
    "update_path",
]

_TENANT = re.compile(r"[A-Za-z0-9_]{1,50}")
_LEVEL = re.compile(r"[A-Za-z0-9_]{1,50}")


def now() -> str:
    """Orion's timestamp format: ISO 8601 UTC with milliseconds and ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class OrionError(Exception):
    """An NGSI v2 error response: ``{"error": …, "description": …}``."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


class LdError(Exception):
    """An NGSI-LD error response (problem details with an ``uri.etsi.org`` error type)."""

    def __init__(self, status: int, kind: str, title: str, detail: str = "") -> None:
        super().__init__(title)
        self.status, self.kind, self.title, self.detail = status, kind, title, detail


def parse_tenant(raw: str | None, *, ld: bool = False) -> str | None:
    """The tenant of a request, lower-cased; ``None`` for the default tenant."""
    if not raw:
        return None
    if not _TENANT.fullmatch(raw):
        if ld:
            raise LdError(400, "BadRequestData", "Invalid tenant name", raw)
        raise OrionError(400, "BadRequest", "bad character in tenant name")
    return raw.lower()


def _check_path(path: str, *, query: bool) -> str:
    if not path.startswith("/"):
        raise OrionError(400, "BadRequest", "Only /absolute/ Service Paths allowed")
    body = path[1:]
    if query and (body == "#" or body.endswith("/#")):
        body = body[:-1].rstrip("/")
    levels = [level for level in body.split("/") if level] if body else []
    if len(levels) > 10 or not all(_LEVEL.fullmatch(level) for level in levels):
        raise OrionError(400, "BadRequest", f"a component of ServicePath is invalid: {path}")
    if path.endswith("#"):
        return path
    return path.rstrip("/") or "/"


def parse_scope(raw: str | None) -> list[str]:
    """A query / subscription ``Fiware-ServicePath`` (comma list, ``#`` allowed); ``/#`` when
    absent."""
    if not raw:
        return ["/#"]
    paths = [p.strip() for p in raw.split(",")]
    if len(paths) > 10:
        raise OrionError(400, "BadRequest", "too many service paths - a maximum of ten")
    return [_check_path(p, query=True) for p in paths]


def update_path(raw: str | None) -> str:
    """The service path of an update (one path, no ``#``); ``/`` when absent."""
    if not raw:
        return "/"
    if "," in raw or "#" in raw:
        raise OrionError(400, "BadRequest", "Only one service path allowed in updates")
    return _check_path(raw.strip(), query=False)


def in_scope(path: str, scope: list[str]) -> bool:
    for item in scope:
        if item.endswith("#"):
            prefix = item[:-1].rstrip("/")
            if not prefix or path == prefix or path.startswith(prefix + "/"):
                return True
        elif path == item:
            return True
    return False


@dataclass
class Entity:
    """A v2 entity (``attrs``: name → ``{"type", "value", "metadata"}``) or an LD entity
    (``attrs``: name → LD attribute object, or a list of instances)."""

    id: str
    type: Any
    path: str = "/"
    attrs: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=now)
    modified: str = field(default_factory=now)
    ld: bool = False

    def copy(self) -> Entity:
        return Entity(
            self.id, self.type, self.path, dict(self.attrs), self.created, self.modified, self.ld
        )


@dataclass(frozen=True)
class Change:
    """One entity altered by one request: what subscriptions are matched against."""

    entity: Entity  # after the change (before it, for entityDelete)
    tenant: str | None
    alteration: str  # entityCreate | entityUpdate | entityChange | entityDelete
    touched: frozenset[str]  # attributes in the request
    changed: frozenset[str]  # attributes whose value or metadata actually changed
    previous: dict[str, Any] = field(default_factory=dict)  # attribute objects before
    forced: bool = False
    correlator: str = ""
    auth: dict[str, str] = field(default_factory=dict)  # X-Auth-Token / Authorization


@dataclass
class Subscription:
    """A subscription as the client gave it (``body``) plus the broker's bookkeeping."""

    id: str
    body: dict[str, Any]
    tenant: str | None
    scope: list[str]
    ld: bool
    status: str = "active"
    times_sent: int = 0
    fails: int = 0
    last_notification: str | None = None
    last_failure: str | None = None
    last_success: str | None = None
    last_success_code: int | None = None
    last_failure_reason: str | None = None
    last_trigger: float | None = None  # monotonic, for throttling

    @property
    def expires(self) -> str | None:
        value = self.body.get("expiresAt" if self.ld else "expires")
        if value is None and self.ld:
            value = self.body.get("expires")
        return value if isinstance(value, str) else None

    def expired(self) -> bool:
        if self.expires is None:
            return False
        try:
            when = datetime.fromisoformat(self.expires.replace("Z", "+00:00"))
        except ValueError:
            return False
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        return when <= datetime.now(UTC)

    def active(self) -> bool:
        if self.expired():
            return False
        if self.ld:
            return self.status == "active" and self.body.get("isActive", True) is not False
        return self.status in ("active", "oneshot")
