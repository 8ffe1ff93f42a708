"""What the FIWARE beat asks the context broker for: the subscription it creates, the description
that recognises it, and the notification URL and secret a listed subscription carries.

The description is ``works-beats:<tag>:<digest>``, the digest covering everything the beat puts
into the subscription except its secret (notification URL, subject, format, attributes…). Replicas
behind one notification URL (a load balancer) with the same options compute the same description,
so they find and share one subscription; a beat whose options differ (another URL, another entity
pattern) has its own. Beats before this scheme described theirs as ``works-beats:<tag>``
(:func:`legacy_description`): such a subscription with this beat's notification URL is taken over.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from beats.fiware.settings import FiwareSettings

__all__ = [
    "SECRET_HEADER",
    "description",
    "legacy_description",
    "notify_url_of",
    "secret_of",
    "subscription_body",
]

SECRET_HEADER = "X-Beats-Secret"


def legacy_description(settings: FiwareSettings) -> str:
    return f"works-beats:{settings.subscription_tag}"


def description(settings: FiwareSettings) -> str:
    unsecret = json.dumps(_body(settings, secret=""), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(unsecret.encode()).hexdigest()[:16]
    return f"{legacy_description(settings)}:{digest}"


def subscription_body(settings: FiwareSettings, *, secret: str) -> dict[str, Any]:
    return {"description": description(settings), **_body(settings, secret=secret)}


def _endpoint(sub: dict[str, Any], *, ld: bool) -> dict[str, Any]:
    note = sub.get("notification")
    if not isinstance(note, dict):
        return {}
    endpoint = note.get("endpoint") if ld else note.get("httpCustom", note.get("http"))
    return endpoint if isinstance(endpoint, dict) else {}


def notify_url_of(sub: dict[str, Any], *, ld: bool) -> str | None:
    url = _endpoint(sub, ld=ld).get("uri" if ld else "url")
    return url if isinstance(url, str) else None


def secret_of(sub: dict[str, Any], *, ld: bool) -> str | None:
    """The secret header a listed subscription makes the broker send (``None``: none)."""
    endpoint = _endpoint(sub, ld=ld)
    if ld:
        pairs = endpoint.get("receiverInfo")
        pairs = pairs if isinstance(pairs, list) else []
        values = {p.get("key"): p.get("value") for p in pairs if isinstance(p, dict)}
    else:
        headers = endpoint.get("headers")
        values = headers if isinstance(headers, dict) else {}
    secret = next((v for k, v in values.items() if str(k).lower() == SECRET_HEADER.lower()), None)
    return secret if isinstance(secret, str) and secret else None


def _body(settings: FiwareSettings, *, secret: str) -> dict[str, Any]:
    if settings.ngsi == "ld":
        return _ld_body(settings, secret)
    return _v2_body(settings, secret)


def _entities(settings: FiwareSettings) -> list[dict[str, Any]]:
    pattern = {"idPattern": settings.id_pattern}
    return [{**pattern, "type": t} for t in settings.entity_type] or [pattern]


def _v2_body(s: FiwareSettings, secret: str) -> dict[str, Any]:
    condition: dict[str, Any] = {}
    if s.watched_attributes:
        condition["attrs"] = s.watched_attributes
    if s.q:
        condition["expression"] = {"q": s.q}
    notification: dict[str, Any] = {
        "httpCustom": {"url": s.notify_url, "headers": {SECRET_HEADER: secret}},
        "attrsFormat": s.attrs_format,
        "metadata": ["dateModified", "previousValue", "actionType", "*"],
    }
    if s.notify_attributes:
        notification["attrs"] = s.notify_attributes
    if s.max_fails_limit:
        notification["maxFailsLimit"] = s.max_fails_limit
    body: dict[str, Any] = {
        "subject": {
            "entities": _entities(s),
            **({"condition": condition} if condition else {}),
        },
        "notification": notification,
    }
    if s.throttling:
        body["throttling"] = s.throttling
    return body


def _ld_body(s: FiwareSettings, secret: str) -> dict[str, Any]:
    notification: dict[str, Any] = {
        "format": s.attrs_format,
        "endpoint": {
            "uri": s.notify_url,
            "accept": s.ld_accept,
            "receiverInfo": [{"key": SECRET_HEADER, "value": secret}],
        },
    }
    if s.notify_attributes:
        notification["attributes"] = s.notify_attributes
    body: dict[str, Any] = {
        "type": "Subscription",
        "entities": [{"type": t} for t in s.entity_type] or [{"idPattern": s.id_pattern}],
        "notification": notification,
        "@context": s.ld_context,
    }
    if s.watched_attributes:
        body["watchedAttributes"] = s.watched_attributes
    if s.q:
        body["q"] = s.q
    return body
