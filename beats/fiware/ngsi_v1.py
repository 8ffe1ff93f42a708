"""NGSIv1 ("legacy") notifications, as Orion 3.x and older send them for a subscription created
with ``attrsFormat: legacy`` (removed in Orion 4.0.0), in the NGSI v2 entity form that
:mod:`beats.fiware.ngsi_v2` shapes.

The body (Orion's ``orion-api.md`` § Notification Messages before 4.0.0, and the accumulator dumps
of its ``*_ngsiv1.test`` functional tests): ``{"subscriptionId", "originator", "contextResponses":
[{"contextElement": {"id", "type", "isPattern", "attributes": [{"name", "type", "value",
"metadatas": [{"name", "type", "value"}]}]}, "statusCode": {"code": "200", "reasonPhrase":
"OK", "details"?}}]}``; no ``Ngsiv2-AttrsFormat`` header. Values are kept as sent (old Orion
versions send numbers as text, ``"26.5"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.normalize import Rejected

__all__ = ["context_response", "is_v1"]


def is_v1(body: Mapping[str, Any]) -> bool:
    return "contextResponses" in body and "data" not in body


def _metadata(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise Rejected("NGSIv1 'metadatas' is not a list")
    metadata: dict[str, Any] = {}
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise Rejected("an NGSIv1 metadata has no string 'name'")
        metadata[item["name"]] = {"type": item.get("type"), "value": item.get("value")}
    return metadata


def _attributes(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise Rejected("NGSIv1 'attributes' is not a list")
    attributes: dict[str, Any] = {}
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise Rejected("an NGSIv1 attribute has no string 'name'")
        attributes[item["name"]] = {
            "type": item.get("type"),
            "value": item.get("value"),
            "metadata": _metadata(item.get("metadatas")),
        }
    return attributes


def _status(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    code = raw.get("code")
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    status = {"code": code, "reason": raw.get("reasonPhrase")}
    if "details" in raw:
        status["details"] = raw["details"]
    return status


def context_response(response: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One ``contextResponses`` element → (the entity in v2 ``normalized`` form, its status
    ``{"code", "reason", "details"?}`` or ``None``)."""
    if not isinstance(response, dict) or not isinstance(response.get("contextElement"), dict):
        raise Rejected("an NGSIv1 context response has no 'contextElement' object")
    element = response["contextElement"]
    if not isinstance(element.get("id"), str) or not element["id"]:
        raise Rejected("an entity has no string 'id'")
    attributes = {
        name: attribute
        for name, attribute in _attributes(element.get("attributes")).items()
        if name not in ("id", "type")
    }
    entity = {"id": element["id"], "type": element.get("type"), **attributes}
    return entity, _status(response.get("statusCode"))
