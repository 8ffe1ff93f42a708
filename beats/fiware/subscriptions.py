"""The FIWARE beat's source: self-healing subscriptions on the context broker.

Notifications arrive over HTTP (``/notify``, :mod:`beats.fiware.routes`); what the source runs is
the upkeep of the subscriptions that make the broker send them:

* one subscription per tenant, recognised by its description (:mod:`beats.fiware.subscription_body`:
  the tag and a digest of the notification URL, subject and format), so a restarted beat, and
  every replica behind one notification URL, finds the one there is instead of creating another.
  Two replicas that both found none and both created one (a race) see two at the next check: all
  of them keep the one with the smallest id and delete the others, which are identical;
* checked every ``subscription_check_interval`` seconds: a missing one (Orion restarted without
  its database) is re-created, an ``inactive`` one (Orion switches a subscription off after
  ``maxFailsLimit`` failed notifications, and never retries a notification) or an expired one
  is re-activated;
* the secret header the broker must send back to ``/notify`` is in the subscription (v2
  ``httpCustom.headers``, LD ``receiverInfo``). A configured ``--notify-secret`` is put into a
  subscription that carries another; a generated one gives way to the secret of the subscription
  found (another replica's), which is then kept in the log;
* the attributes each subscription notifies (``notification.attrs``) are remembered by id
  (:attr:`SubscriptionKeeper.value_names`): they name the columns of the v2 ``values`` format;
* its state (``timesSent``, ``failsCounter``, ``lastFailureReason``) is in ``/readyz`` and in
  ``beats_fiware_subscription_*`` metrics;
* the description is kept in the log: a beat restarted with other options (another
  notification URL, subject or format) deletes the subscriptions of its previous options once,
  after its first check, so the broker stops sending what it no longer asks for. Once only:
  replicas in a rolling update, each with its own log, do not delete each other's for ever.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import httpx
from prometheus_client import Gauge

from beats.fiware.settings import FiwareSettings
from beats.fiware.subscription_body import (
    SECRET_HEADER,
    description,
    legacy_description,
    notify_url_of,
    secret_of,
    subscription_body,
)
from common.eventlog import EventLog
from common.pipeline import Pipeline

__all__ = ["SECRET_HEADER", "SubscriptionKeeper", "load_secret"]

_SECRET_CURSOR = "fiware-notify-secret"
_OPTIONS_CURSOR = "fiware-subscription"
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
        self.description = description(settings)
        self.secret = ""
        self.states: dict[str, dict[str, Any]] = {}
        self.value_names: dict[str, list[str]] = {}
        """Subscription id → its ``notification.attrs`` (the beat's own subscriptions)."""
        self._gauges: dict[str, Gauge] = {}
        self._store: EventLog | None = None

    async def run(self, pipeline: Pipeline) -> None:
        pipeline.set_ready("subscriptions", False, "checking")  # before the first await
        self._store = pipeline.log
        self.secret = await load_secret(self.settings, pipeline.log)
        self._register_metrics(pipeline)
        previous = await pipeline.log.get_cursor(_OPTIONS_CURSOR)
        async with httpx.AsyncClient(base_url=self.settings.orion_url, timeout=10) as http:
            while True:
                try:
                    for tenant in self.settings.tenants():
                        self.states[tenant or "default"] = await self._ensure(http, tenant)
                    if previous != self.description:
                        await self._retire(http, previous)
                        await pipeline.log.set_cursor(_OPTIONS_CURSOR, self.description)
                        previous = self.description
                    self._report(pipeline)
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    pipeline.metrics.source_errors.labels("subscriptions").inc()
                    pipeline.set_ready("subscriptions", False, f"broker: {exc!r}")
                    _log.warning("fiware: cannot check subscriptions: %r", exc)
                await asyncio.sleep(self.settings.subscription_check_interval)

    async def remove(self) -> bool:
        """Delete this beat's subscriptions (on shutdown, when asked to), unless another replica
        still answers at the notification URL. True when they were deleted."""
        if await self._replica_answers():
            _log.info(
                "fiware: another replica answers at %s: the subscriptions are kept",
                self.settings.notify_url,
            )
            return False
        async with httpx.AsyncClient(base_url=self.settings.orion_url, timeout=10) as http:
            for tenant in self.settings.tenants():
                for sub in await self._mine(http, tenant):
                    await self._delete(http, sub, tenant)
        return True

    async def _retire(self, http: httpx.AsyncClient, previous: str | None) -> None:
        """Delete the subscriptions described as this beat's previous options were."""
        for tenant in self.settings.tenants() if previous else ():
            for sub in await self._listed(http, tenant):
                if sub.get("description") == previous:
                    await self._delete(http, sub, tenant)
                    _log.warning(
                        "fiware: deleted subscription %s (tenant %s): it was for this beat's "
                        "previous options (notification URL, subject or format)",
                        sub["id"], tenant or "default",
                    )  # fmt: skip

    async def _replica_answers(self) -> bool:
        """Whether a beat answers a notification without the secret at the notification URL
        (this one no longer listens when this runs): its 401 names the secret header."""
        try:
            async with httpx.AsyncClient(timeout=5) as http:
                response = await http.post(self.settings.notify_url, json={})
        except httpx.HTTPError:
            return False
        return response.status_code == 401 and SECRET_HEADER in response.text

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

    async def _listed(self, http: httpx.AsyncClient, tenant: str | None) -> list[dict[str, Any]]:
        """Every subscription of the tenant, paging through the broker's list (Orion's default
        page is 20; its maximum 1000)."""
        listed: list[dict[str, Any]] = []
        while True:
            response = await http.get(
                f"{self._prefix}/subscriptions",
                headers=self._headers(tenant),
                params={"limit": 1000, "offset": len(listed)},
            )
            response.raise_for_status()
            page = response.json()
            listed += page
            if len(page) < 1000:
                return listed

    async def _mine(self, http: httpx.AsyncClient, tenant: str | None) -> list[dict[str, Any]]:
        """This beat's subscriptions, smallest id first: every replica picks the same one."""
        listed = await self._listed(http, tenant)
        mine = [s for s in listed if s.get("description") == self.description]
        if not mine:
            mine = [s for s in listed if self._legacy(s)][:1]
        return sorted(mine, key=lambda s: str(s["id"]))

    def _legacy(self, sub: dict[str, Any]) -> bool:
        return (
            sub.get("description") == legacy_description(self.settings)
            and notify_url_of(sub, ld=self._ld) == self.settings.notify_url
        )

    async def _ensure(self, http: httpx.AsyncClient, tenant: str | None) -> dict[str, Any]:
        mine = await self._mine(http, tenant)
        if not mine:
            await self._create(http, tenant)
            mine = await self._mine(http, tenant)  # a replica may have created one as well
            if not mine:
                raise ValueError("the subscription just created is not listed")
        sub, *twins = mine
        for twin in twins:
            await self._delete(http, twin, tenant)
            _log.info("fiware: deleted %s, a twin of subscription %s", twin["id"], sub["id"])
        await self._settle(http, sub, tenant)
        self._remember(sub)
        if self._inactive(sub):
            patch = {"isActive": True} if self._ld else {"status": "active"}
            await self._patch(http, sub, tenant, patch)
            _log.warning(
                "fiware: re-activated subscription %s (was %s)", sub["id"], sub.get("status")
            )
            return {**self._state(sub), "status": "reactivated"}
        return self._state(sub)

    async def _create(self, http: httpx.AsyncClient, tenant: str | None) -> None:
        body = subscription_body(self.settings, secret=self.secret)
        response = await http.post(
            f"{self._prefix}/subscriptions", json=body, headers=self._headers(tenant)
        )
        response.raise_for_status()
        _log.info(
            "fiware: created subscription %s (tenant %s)",
            response.headers.get("location"),
            tenant or "default",
        )

    async def _settle(
        self, http: httpx.AsyncClient, sub: dict[str, Any], tenant: str | None
    ) -> None:
        """Make the subscription and this beat agree on the description and the secret."""
        theirs = secret_of(sub, ld=self._ld)
        if self.settings.notify_secret is None and theirs and theirs != self.secret:
            self.secret = theirs  # generated: another replica's (or an earlier run's) wins
            if self._store is not None:
                await self._store.set_cursor(_SECRET_CURSOR, theirs)
            _log.info("fiware: using the secret of subscription %s", sub["id"])
        if sub.get("description") == self.description and theirs == self.secret:
            return
        body = subscription_body(self.settings, secret=self.secret)
        patch = {k: v for k, v in body.items() if k != "type"}
        await self._patch(http, sub, tenant, patch)
        sub.update(patch)
        _log.warning(
            "fiware: updated subscription %s with this beat's description and secret "
            "(replicas must share --notify-secret)",
            sub["id"],
        )

    async def _patch(
        self, http: httpx.AsyncClient, sub: dict[str, Any], tenant: str | None, patch: Any
    ) -> None:
        response = await http.patch(
            f"{self._prefix}/subscriptions/{sub['id']}", json=patch, headers=self._headers(tenant)
        )
        response.raise_for_status()

    async def _delete(
        self, http: httpx.AsyncClient, sub: dict[str, Any], tenant: str | None
    ) -> None:
        response = await http.delete(
            f"{self._prefix}/subscriptions/{sub['id']}", headers=self._headers(tenant)
        )
        if response.status_code != 404:  # another replica deleted it first
            response.raise_for_status()

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
            f"fails {s.get('failsCounter', 0)}, id {s.get('id')}"
            + (f", last failure: {s['lastFailureReason']}" if s.get("lastFailureReason") else "")
            + ")"
            for tenant, s in self.states.items()
        )
        pipeline.set_ready("subscriptions", True, detail)
        pipeline.metrics.source_connected.set(1)
