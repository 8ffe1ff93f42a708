"""The marking definitions the OpenCTI beat knows, and loading them from the platform.

An object's TLP depends on its markings' definitions. The standard TLP ids are built in
(:data:`~beats.opencti.stix.STANDARD_TLP_IDS`); every other marking (a platform's own TLP
markings, PAP, statements, custom kinds) must be *known* or it counts as red. The beat learns
them from two places and keeps them in its event log (:meth:`EventLog.save_state`), so a
restart knows what an earlier run learned:

* the stream: every ``marking-definition`` object it sends (a live stream sends an object's
  markings as dependencies before the object), saved *before* the event is committed;
* the platform: at start, OpenCTI's GraphQL API ``markingDefinitions`` (paginated), the query
  pycti's ``MarkingDefinition.list`` makes.

Loading from the platform has three outcomes, shown in ``/readyz`` as the ``markings`` check:
loaded (ok); *unavailable* — no such API (404, a GraphQL validation error, not JSON) or the
token may not read it (401/403, ``AUTH_REQUIRED`` / ``FORBIDDEN_ACCESS``): ok, with the reason,
since the stream's markings are used and unknown ones count as red (nothing can leak, some
objects may be hidden more than needed); *failing* — network errors, timeouts, 5xx: not ok,
retried with backoff until it is loaded or unavailable. The stream is consumed in every case.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx

from beats.opencti.stix import marking_level

__all__ = ["QUERY", "STATE", "MarkingsFailing", "MarkingsUnavailable", "fetch_platform_markings"]

STATE = "opencti.markings"
"""The event log's state namespace of the known markings (id → level)."""

QUERY = """
query BeatsMarkingDefinitions($first: Int, $after: ID) {
  markingDefinitions(first: $first, after: $after) {
    edges { node { id standard_id definition_type definition x_opencti_order x_opencti_stix_ids } }
    pageInfo { endCursor hasNextPage }
  }
}
"""
_PAGE = 500
_MAX_PAGES = 200
_REFUSED_CODES = {"AUTH_REQUIRED", "FORBIDDEN_ACCESS", "UNAUTHENTICATED", "FORBIDDEN"}
_log = logging.getLogger(__name__)


class MarkingsUnavailable(Exception):
    """The platform has no marking API this beat can use (absent, or refused to its token)."""


class MarkingsFailing(Exception):
    """Loading failed in a way that may pass (network, timeout, server error)."""


async def fetch_platform_markings(
    http: httpx.AsyncClient, url: str, token: str | None
) -> dict[str, str]:
    """Every marking definition of the platform at ``url`` (its GraphQL endpoint), as
    ``{standard id or alias: level}``. Raises :class:`MarkingsUnavailable` or
    :class:`MarkingsFailing`."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    levels: dict[str, str] = {}
    after: str | None = None
    for _ in range(_MAX_PAGES):
        connection = await _page(http, url, headers, after)
        for edge in _list(connection.get("edges")):
            node = edge.get("node") if isinstance(edge, dict) else None
            if isinstance(node, dict):
                levels.update(_levels(node))
        info = connection.get("pageInfo")
        info = info if isinstance(info, dict) else {}
        after = info.get("endCursor") if info.get("hasNextPage") else None
        if not after:
            return levels
    raise MarkingsFailing(f"more than {_MAX_PAGES * _PAGE} marking definitions")


async def _page(
    http: httpx.AsyncClient, url: str, headers: Mapping[str, str], after: str | None
) -> dict[str, Any]:
    body = {"query": QUERY, "variables": {"first": _PAGE, "after": after}}
    try:
        response = await http.post(url, json=body, headers=dict(headers))
    except (httpx.HTTPError, TimeoutError) as exc:
        raise MarkingsFailing(f"{type(exc).__name__}: {exc}") from None
    if response.status_code in (401, 403):
        raise MarkingsUnavailable(f"HTTP {response.status_code}: the token may not read them")
    if response.status_code >= 500:
        raise MarkingsFailing(f"HTTP {response.status_code}")
    try:
        answer = response.json()
    except ValueError:
        raise MarkingsUnavailable(f"HTTP {response.status_code}, not a GraphQL answer") from None
    if not isinstance(answer, dict):
        raise MarkingsUnavailable("not a GraphQL answer")
    _check_errors(answer, response.status_code)
    data = answer.get("data")
    connection = data.get("markingDefinitions") if isinstance(data, dict) else None
    if not isinstance(connection, dict):
        raise MarkingsUnavailable("the answer has no markingDefinitions")
    return connection


def _check_errors(answer: dict[str, Any], status: int) -> None:
    errors = [e for e in _list(answer.get("errors")) if isinstance(e, dict)]
    if not errors and status < 400:
        return
    first = errors[0] if errors else {}
    message = str(first.get("message", f"HTTP {status}"))[:200]
    extensions = first.get("extensions")
    code = str(extensions.get("code", "")) if isinstance(extensions, dict) else ""
    if code in _REFUSED_CODES:
        raise MarkingsUnavailable(f"refused ({code}): {message}")
    if status >= 400 or code in ("GRAPHQL_VALIDATION_FAILED", "GRAPHQL_PARSE_FAILED"):
        raise MarkingsUnavailable(f"HTTP {status}: {message}")
    raise MarkingsFailing(f"GraphQL error {code or ''}: {message}".replace("  ", " "))


def _levels(node: dict[str, Any]) -> dict[str, str]:
    level = marking_level(node)
    ids = [node.get("standard_id"), *_list(node.get("x_opencti_stix_ids"))]
    return {ref: level for ref in ids if isinstance(ref, str) and ref}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
