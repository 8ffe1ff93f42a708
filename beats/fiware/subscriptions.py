"""The FIWARE beat's source: self-healing subscriptions on the context broker.

Notifications arrive over HTTP (``/notify``, :mod:`beats.fiware.routes`); what the source runs is
the upkeep of the subscriptions that make the broker send them:

* one subscription per tenant, recognised by its description ``works-beats:<tag>`` — so a
  restarted beat finds its own instead of creating duplicates;
* checked every ``subscription_check_interval`` seconds: a missing one (Orion restarted without
  its database) is re-created, an ``inactive`` one (Orion switches a subscription off after
  ``maxFailsLimit`` failed notifications, and never retries a notification) or an expired one
  is re-activated;
* the attributes each subscription notifies (``notification.attrs``) are remembered by id
  (:attr:`SubscriptionKeeper.value_names`): they name the columns of the v2 ``values`` format;
* its state (``timesSent``, ``failsCounter``, ``lastFailureReason``) is in ``/readyz`` and in
  ``beats_fiware_subscription_*`` metrics; the secret header the broker must send back to
  ``/notify`` is put into the subscription (v2 ``httpCustom.headers``, LD ``receiverInfo``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import httpx
from prometheus_client import Gauge

from beats.fiware.settings import FiwareSettings
from common.eventlog import EventLog
from common.pipeline import Pipeline

__all__ = ["SECRET_HEADER", "SubscriptionKeeper", "load_secret"]

SECRET_HEADER = "X-Beats-Secret"
_SECRET_CURSOR = "fiware-notify-secret"
_log = logging.getLogger(__name__)


async def load_secret(settings: FiwareSettings, log: EventLog) -> str:
    """The configured secret, else one generated once and kept in the log's cursor table."""
    if settings.notify_secret is not None:
        return settings.notify_secret.get_secret_value()
    stored = await log.get_cursor(_SECRET_CURSOR)
    if stored:
        return stored
    secret = secrets.token_urlsafe(24)
    await log.set_cursor(_SECRET_CURSOR, secret)
    return secret


class SubscriptionKeeper:
    def __init__(self, settings: FiwareSettings) -> None:
        self.settings = settings
        self.tag = f"works-beats:{settings.subscription_tag}"
        self.secret = ""
        self.states: dict[str, dict[str, Any]] = {}
        self.value_names: dict[str, list[str]] = {}
        """Subscription id → its ``notification.attrs`` (the beat's own subscriptions)."""
        self._gauges: dict[str, Gauge] = {}

    async def run(self, pipeline: Pipeline) -> None:
        pipeline.set_ready("subscriptions", False, "checking")  # before the first await
        self.secret = await load_secret(self.settings, pipeline.log)
        self._register_metrics(pipeline)
        async with httpx.AsyncClient(base_url=self.settings.orion_url, timeout=10) as http:
            while True:
                try:
                    for tenant in self.settings.tenants():
                        self.states[tenant or "default"] = await self._ensure(http, tenant)
                    self._report(pipeline)
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    pipeline.metrics.source_errors.labels("subscriptions").inc()
                    pipeline.set_ready("subscriptions", False, f"broker: {exc!r}")
                    _log.warning("fiware: cannot check subscriptions: %r", exc)
                await asyncio.sleep(self.settings.subscription_check_interval)

    async def remove(self) -> None:
        """Delete this beat's subscriptions (on shutdown, when asked to)."""
        async with httpx.AsyncClient(base_url=self.settings.orion_url, timeout=10) as http:
            for tenant in self.settings.tenants():
                for sub in await self._mine(http, tenant):
                    await http.delete(
                        f"{self._prefix}/subscriptions/{sub['id']}", headers=self._headers(tenant)
                    )

    @property
    def _ld(self) -> bool:
        return self.settings.ngsi == "ld"

    @property
    def _prefix(self) -> str:
        return "/ngsi-ld/v1" if self._ld else "/v2"

    def _headers(self, tenant: str | None) -> dict[str, str]:
        if self._ld:
            return {"NGSILD-Tenant": tenant} if tenant else {}
        headers = {"Fiware-ServicePath": self.settings.fiware_servicepath}
        if tenant:
            headers["Fiware-Service"] = tenant
        return headers

    async def _mine(self, http: httpx.AsyncClient, tenant: str | None) -> list[dict[str, Any]]:
        """This beat's subscriptions, paging through the broker's list (Orion's default page
        is 20; its maximum 1000)."""
        mine: list[dict[str, Any]] = []
        offset = 0
        while True:
            response = await http.get(
                f"{self._prefix}/subscriptions",
                headers=self._headers(tenant),
                params={"limit": 1000, "offset": offset},
            )
            response.raise_for_status()
            page = response.json()
            mine += [s for s in page if s.get("description") == self.tag]
            if len(page) < 1000:
                return mine
            offset += len(page)

    async def _ensure(self, http: httpx.AsyncClient, tenant: str | None) -> dict[str, Any]:
        mine = await self._mine(http, tenant)
        headers = self._headers(tenant)
        if not mine:
            response = await http.post(
                f"{self._prefix}/subscriptions", json=self._body(), headers=headers
            )
            response.raise_for_status()
            _log.info(
                "fiware: created subscription %s (tenant %s)",
                response.headers.get("location"),
                tenant or "default",
            )
            created = response.headers.get("location", "").rsplit("/", 1)[-1]
            self.value_names[created] = list(self.settings.notify_attributes)
            return {"status": "created", "id": created}
        sub = mine[0]
        self._remember(sub)
        if self._inactive(sub):
            patch = {"isActive": True} if self._ld else {"status": "active"}
            response = await http.patch(
                f"{self._prefix}/subscriptions/{sub['id']}", json=patch, headers=headers
            )
            response.raise_for_status()
            _log.warning(
                "fiware: re-activated subscription %s (was %s)", sub["id"], sub.get("status")
            )
            return {**self._state(sub), "status": "reactivated"}
        return self._state(sub)

    def _remember(self, sub: dict[str, Any]) -> None:
        note = sub.get("notification")
        attrs = note.get("attrs", note.get("attributes")) if isinstance(note, dict) else None
        if isinstance(attrs, list) and all(isinstance(a, str) for a in attrs):
            self.value_names[str(sub["id"])] = list(attrs)

    def _inactive(self, sub: dict[str, Any]) -> bool:
        if self._ld:
            return sub.get("isActive") is False or sub.get("status") in ("paused", "expired")
        return sub.get("status") in ("inactive", "expired")

    def _state(self, sub: dict[str, Any]) -> dict[str, Any]:
        note = sub.get("notification", {})
        return {
            "id": sub["id"],
            "status": sub.get("status", "active"),
            "timesSent": note.get("timesSent", 0),
            # Orion-LD calls them consecutiveErrors and lastErrorReason
            "failsCounter": note.get("failsCounter", note.get("consecutiveErrors", 0)),
            "lastFailureReason": note.get("lastFailureReason", note.get("lastErrorReason")),
        }

    def _body(self) -> dict[str, Any]:
        return self._ld_body() if self._ld else self._v2_body()

    def _entities(self) -> list[dict[str, Any]]:
        pattern = {"idPattern": self.settings.id_pattern}
        return [{**pattern, "type": t} for t in self.settings.entity_type] or [pattern]

    def _v2_body(self) -> dict[str, Any]:
        s = self.settings
        condition: dict[str, Any] = {}
        if s.watched_attributes:
            condition["attrs"] = s.watched_attributes
        if s.q:
            condition["expression"] = {"q": s.q}
        notification: dict[str, Any] = {
            "httpCustom": {"url": s.notify_url, "headers": {SECRET_HEADER: self.secret}},
            "attrsFormat": s.attrs_format,
            "metadata": ["dateModified", "previousValue", "actionType", "*"],
        }
        if s.notify_attributes:
            notification["attrs"] = s.notify_attributes
        if s.max_fails_limit:
            notification["maxFailsLimit"] = s.max_fails_limit
        body: dict[str, Any] = {
            "description": self.tag,
            "subject": {
                "entities": self._entities(),
                **({"condition": condition} if condition else {}),
            },
            "notification": notification,
        }
        if s.throttling:
            body["throttling"] = s.throttling
        return body

    def _ld_body(self) -> dict[str, Any]:
        s = self.settings
        notification: dict[str, Any] = {
            "format": s.attrs_format,
            "endpoint": {
                "uri": s.notify_url,
                "accept": s.ld_accept,
                "receiverInfo": [{"key": SECRET_HEADER, "value": self.secret}],
            },
        }
        if s.notify_attributes:
            notification["attributes"] = s.notify_attributes
        body: dict[str, Any] = {
            "description": self.tag,
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

    def _register_metrics(self, pipeline: Pipeline) -> None:
        if self._gauges:
            return  # a restarted run() keeps its gauges
        registry = pipeline.metrics.registry
        for name, help_text in (
            ("times_sent", "Notifications the broker says it sent"),
            ("failures", "Consecutive failed notifications the broker reports (failsCounter)"),
            ("active", "1 when the subscription is active"),
        ):
            self._gauges[name] = Gauge(
                f"beats_fiware_subscription_{name}", help_text, ["tenant"], registry=registry
            )

    def _report(self, pipeline: Pipeline) -> None:
        for tenant, state in self.states.items():
            self._gauges["times_sent"].labels(tenant).set(state.get("timesSent", 0))
            self._gauges["failures"].labels(tenant).set(state.get("failsCounter", 0))
            self._gauges["active"].labels(tenant).set(1)
        detail = "; ".join(
            f"{tenant}: {s['status']} (sent {s.get('timesSent', 0)}, "
            f"fails {s.get('failsCounter', 0)}"
            + (f", last failure: {s['lastFailureReason']}" if s.get("lastFailureReason") else "")
            + ")"
            for tenant, s in self.states.items()
        )
        pipeline.set_ready("subscriptions", True, detail)
        pipeline.metrics.source_connected.set(1)
