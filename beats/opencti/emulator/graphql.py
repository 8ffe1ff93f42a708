"""The part of OpenCTI's GraphQL API (``POST /graphql``) the beat uses: ``markingDefinitions``.

The schema below is a subset of OpenCTI's ``opencti-graphql/config/schema/opencti.graphql``
with the same names and types: the ``MarkingDefinition`` type (its scalar fields), its relay
connection (``edges { cursor node }``, ``pageInfo``) and the ``markingDefinitions`` query with
``first``, ``after``, ``orderBy``, ``orderMode`` and ``search``. Queries run through
``graphql-core``, so a query asking for anything else fails validation exactly as a GraphQL
server answers it (HTTP 400, ``errors[].extensions.code = GRAPHQL_VALIDATION_FAILED``). Without
a valid bearer token the answer is OpenCTI's ``AUTH_REQUIRED`` error ("You must be logged in to
do this."). The marking definitions are the platform's (:attr:`StreamStore.objects`): the TLP
markings every platform has, those the stream carried, and platform-only ones a test adds.
"""

from __future__ import annotations

import base64
from typing import Any

from graphql import GraphQLError, build_schema, graphql

from beats.opencti.stix import OCTI_EXTENSION

__all__ = ["SCHEMA", "marking_node", "run_query"]

_SDL = """
scalar DateTime
scalar StixId
enum OrderingMode { asc desc }
enum MarkingDefinitionsOrdering {
  definition_type definition x_opencti_order x_opencti_color created modified created_at updated_at
}
type PageInfo {
  startCursor: String!
  endCursor: String!
  hasNextPage: Boolean!
  hasPreviousPage: Boolean!
  globalCount: Int!
}
type MarkingDefinition {
  id: ID!
  standard_id: String!
  entity_type: String!
  parent_types: [String]!
  x_opencti_stix_ids: [StixId]
  is_inferred: Boolean!
  spec_version: String!
  created_at: DateTime!
  updated_at: DateTime!
  created: DateTime
  modified: DateTime
  definition_type: String
  definition: String
  x_opencti_order: Int!
  x_opencti_color: String
  toStix: String
}
type MarkingDefinitionEdge { cursor: String! node: MarkingDefinition! }
type MarkingDefinitionConnection { pageInfo: PageInfo! edges: [MarkingDefinitionEdge!]! }
type Query {
  markingDefinitions(
    first: Int
    after: ID
    orderBy: MarkingDefinitionsOrdering
    orderMode: OrderingMode
    search: String
  ): MarkingDefinitionConnection
}
"""
SCHEMA = build_schema(_SDL)
AUTH_REQUIRED = "You must be logged in to do this."


def marking_node(stix: dict[str, Any]) -> dict[str, Any]:
    """A marking-definition as OpenCTI's API shows it: ``definition_type`` in its own spelling
    (``TLP``, ``PAP``, or a custom type), ``definition`` the name (``TLP:AMBER``; TLP:WHITE is
    TLP:CLEAR), order and color from its OpenCTI extension."""
    extension = stix.get("extensions", {}).get(OCTI_EXTENSION, {})
    kind = str(stix.get("definition_type") or "")
    definition = stix.get("name") or ""
    raw = stix.get("definition")
    if not definition and isinstance(raw, dict):
        definition = f"{kind.upper()}:{str(next(iter(raw.values()), '')).upper()}"
    if kind.lower() == "tlp":
        kind = "TLP"
    definition = "TLP:CLEAR" if definition.upper() == "TLP:WHITE" else definition
    created = stix.get("created")
    return {
        "id": extension.get("id") or stix["id"],
        "standard_id": stix["id"],
        "entity_type": "Marking-Definition",
        "parent_types": ["Basic-Object", "Stix-Object", "Stix-Meta-Object"],
        "x_opencti_stix_ids": extension.get("stix_ids", []),
        "is_inferred": False,
        "spec_version": "2.1",
        "created_at": extension.get("created_at") or created,
        "updated_at": extension.get("updated_at") or created,
        "created": created,
        "modified": stix.get("modified") or created,
        "definition_type": kind,
        "definition": definition,
        "x_opencti_order": int(extension.get("order", 0) or 0),
        "x_opencti_color": extension.get("color"),
    }


def _connection(nodes: list[dict[str, Any]], args: dict[str, Any]) -> dict[str, Any]:
    search = args.get("search")
    if search:
        nodes = [n for n in nodes if str(search).lower() in str(n["definition"]).lower()]
    order = args.get("orderBy")
    if order:
        nodes = sorted(nodes, key=lambda n: str(n.get(order) or ""))
        if args.get("orderMode") == "desc":
            nodes.reverse()
    start = _offset(args.get("after"))
    first = args.get("first")
    count = len(nodes) if first is None else max(0, int(first))
    page = nodes[start : start + count]
    cursors = [_cursor(start + i) for i in range(len(page))]
    return {
        "edges": [{"cursor": c, "node": n} for c, n in zip(cursors, page, strict=True)],
        "pageInfo": {
            "startCursor": cursors[0] if cursors else "",
            "endCursor": cursors[-1] if cursors else "",
            "hasNextPage": start + len(page) < len(nodes),
            "hasPreviousPage": start > 0,
            "globalCount": len(nodes),
        },
    }


def _cursor(index: int) -> str:
    return base64.b64encode(f"offset:{index}".encode()).decode()


def _offset(after: Any) -> int:
    if not after:
        return 0
    try:
        return int(base64.b64decode(str(after)).decode().removeprefix("offset:")) + 1
    except ValueError:
        raise GraphQLError(f"invalid cursor {after!r}") from None


async def run_query(
    body: Any, markings: list[dict[str, Any]], *, authenticated: bool
) -> tuple[int, dict[str, Any]]:
    """``(HTTP status, JSON answer)`` of one ``POST /graphql`` body."""
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        return 400, _error("Must provide query string.", "BAD_REQUEST")
    if not authenticated:
        return 200, {**_error(AUTH_REQUIRED, "AUTH_REQUIRED"), "data": None}
    variables = body.get("variables") if isinstance(body.get("variables"), dict) else None
    nodes = [marking_node(m) for m in markings]
    root = {"markingDefinitions": lambda _info, **args: _connection(nodes, args)}
    result = await graphql(
        SCHEMA,
        body["query"],
        root_value=root,
        variable_values=variables,
        operation_name=body.get("operationName"),
    )
    answer: dict[str, Any] = {"data": result.data}
    if result.errors:
        invalid = result.data is None
        code = "GRAPHQL_VALIDATION_FAILED" if invalid else "INTERNAL_SERVER_ERROR"
        answer["errors"] = [
            {"message": e.message, "extensions": {"code": code}} for e in result.errors
        ]
        if invalid:
            return 400, answer
    return 200, answer


def _error(message: str, code: str) -> dict[str, Any]:
    return {"errors": [{"message": message, "extensions": {"code": code}}]}
