"""The emulated broker: entities per tenant, subscriptions, and which changes notify whom.

Triggering follows ``orion-api.md`` § Notification Triggering, Subscriptions based in alteration
type, Oneshot Subscriptions and ``throttling`` (notifications inside the guard period are
discarded, not delayed). NGSI-LD subscriptions fire on ``watchedAttributes`` (any attribute when
absent), ``q`` and ``entities``. ``restart(lose_subscriptions=True)`` is Orion restarting without
its database: every subscription and queued notification is gone (entities too when asked).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import uuid
from collections import defaultdict
from typing import Any

from beats.fiware.emulator.bodies import v2_notification
from beats.fiware.emulator.ld_bodies import LdMode, ld_notification
from beats.fiware.emulator.model import Change, Entity, Subscription, in_scope
from beats.fiware.emulator.notifier import Notifier
from beats.fiware.emulator.query import QueryError, compile_q

__all__ = ["Broker"]

_DEFAULT_ALTERATIONS = ("entityCreate", "entityChange")


def _values(entity: Entity) -> dict[str, Any]:
    """name → value (relationships: the target) for ``q``."""
    values: dict[str, Any] = {"id": entity.id, "type": entity.type}
    for name, attr in entity.attrs.items():
        first = attr[0] if isinstance(attr, list) and attr else attr
        if isinstance(first, dict):
            values[name] = first.get("value", first.get("object"))
    return values


def _selector_matches(selector: dict[str, Any], entity: Entity) -> bool:
    try:
        if "id" in selector and selector["id"] != entity.id:
            return False
        if "idPattern" in selector and not re.fullmatch(selector["idPattern"], entity.id):
            return False
        if "type" in selector and selector["type"] != entity.type:
            return False
        pattern = selector.get("typePattern")
        return not (pattern and not re.fullmatch(pattern, str(entity.type)))
    except re.error:
        return False


def _q_matches(q: Any, entity: Entity, *, ld: bool) -> bool:
    if not isinstance(q, str):
        return True
    try:
        return compile_q(q, ld=ld)(_values(entity))
    except (QueryError, re.error):
        return False


def _v2_fires(sub: Subscription, change: Change) -> bool:
    subject = sub.body.get("subject", {})
    condition = subject.get("condition") or {}
    allowed = condition.get("alterationTypes") or _DEFAULT_ALTERATIONS
    alteration = change.alteration
    if alteration in ("entityCreate", "entityDelete"):
        fires = alteration in allowed
        relevant = change.touched if alteration == "entityCreate" else None
    elif "entityUpdate" in allowed:
        fires, relevant = True, change.touched
    else:
        fires = "entityChange" in allowed and (bool(change.changed) or change.forced)
        relevant = change.touched if change.forced else change.changed
    watched = condition.get("attrs") or []
    if fires and watched and relevant is not None and not set(watched) & relevant:
        return False
    expression = condition.get("expression") or {}
    return fires and _q_matches(expression.get("q"), change.entity, ld=False)


def _ld_fires(sub: Subscription, change: Change) -> bool:
    if change.alteration == "entityDelete":
        return False
    watched = sub.body.get("watchedAttributes") or []
    if watched and not set(watched) & change.touched:
        return False
    return _q_matches(sub.body.get("q"), change.entity, ld=True)


class Broker:
    """State of the emulated Orion / NGSI-LD broker. Changes go through :meth:`changed`.
    ``ld_mode`` is how Orion-LD sends NGSI-LD notifications (:mod:`.ld_bodies`): ``default``
    (as it ships) or ``experimental`` (``-experimental``)."""

    def __init__(self, notifier: Notifier | None = None, *, ld_mode: LdMode = "default") -> None:
        self.notifier = notifier or Notifier()
        self.ld_mode: LdMode = ld_mode
        self.entities: dict[tuple[str | None, bool], dict[tuple[str, str], Entity]] = defaultdict(
            dict
        )
        self.subscriptions: dict[str, Subscription] = {}
        self._cbnotif: dict[str, int] = {}

    # --- entities ---------------------------------------------------------------------

    def store(self, tenant: str | None, *, ld: bool) -> dict[tuple[str, str], Entity]:
        return self.entities[(tenant, ld)]

    def find(
        self, tenant: str | None, entity_id: str, scope: list[str], *, ld: bool = False
    ) -> list[Entity]:
        store = self.entities.get((tenant, ld), {})
        return [e for (i, _), e in store.items() if i == entity_id and in_scope(e.path, scope)]

    # --- subscriptions ----------------------------------------------------------------

    def add_subscription(
        self, body: dict[str, Any], *, tenant: str | None, scope: list[str], ld: bool
    ) -> Subscription:
        sub_id = str(body.pop("id", "") or "") if ld else ""
        if not sub_id:
            sub_id = f"urn:ngsi-ld:Subscription:{uuid.uuid4()}" if ld else secrets.token_hex(12)
        status = body.pop("status", "active")
        if ld:
            status = "active" if body.get("isActive", True) is not False else "paused"
        sub = Subscription(sub_id, body, tenant, scope, ld, status=status)
        self.subscriptions[sub_id] = sub
        return sub

    def visible(self, tenant: str | None, *, ld: bool) -> list[Subscription]:
        return [s for s in self.subscriptions.values() if s.tenant == tenant and s.ld == ld]

    # --- notifications ----------------------------------------------------------------

    def changed(self, changes: list[Change]) -> None:
        """Queue the notifications ``changes`` trigger (one per subscription and entity)."""
        for change in changes:
            for sub in list(self.subscriptions.values()):
                if self._triggers(sub, change):
                    self._fire(sub, change, self._next_cbnotif(change.correlator))

    def _next_cbnotif(self, correlator: str) -> int:
        """``cbnotif=N``: the notifications one request triggered, counted from 1 (a bounded
        memory of recent correlators stands in for Orion's per-request counter)."""
        count = self._cbnotif.pop(correlator, 0) + 1
        self._cbnotif[correlator] = count
        while len(self._cbnotif) > 1000:
            self._cbnotif.pop(next(iter(self._cbnotif)))
        return count

    def _triggers(self, sub: Subscription, change: Change) -> bool:
        if sub.ld != change.entity.ld or sub.tenant != change.tenant or not sub.active():
            return False
        if not sub.ld and not in_scope(change.entity.path, sub.scope):
            return False
        selectors = (sub.body if sub.ld else sub.body.get("subject", {})).get("entities")
        if selectors and not any(_selector_matches(s, change.entity) for s in selectors):
            return False
        return _ld_fires(sub, change) if sub.ld else _v2_fires(sub, change)

    def _fire(self, sub: Subscription, change: Change, counter: int) -> None:
        throttling = sub.body.get("throttling")
        guard = float(throttling) if isinstance(throttling, int | float) else 0.0
        clock = asyncio.get_running_loop().time()
        if sub.last_trigger is not None and clock - sub.last_trigger < guard:
            return  # discarded, as Orion does inside the guard period
        sub.last_trigger = clock
        if sub.status == "oneshot":
            sub.status = "inactive"
        if sub.ld:
            mode = self.ld_mode
            self.notifier.enqueue(sub, lambda: ld_notification(sub, change, mode))
        else:
            self.notifier.enqueue(sub, lambda: v2_notification(sub, change, counter))

    # --- restart ----------------------------------------------------------------------

    def restart(self, *, lose_subscriptions: bool = True, lose_entities: bool = False) -> None:
        """Simulate a broker restart: queued notifications are lost; without its database
        (``lose_subscriptions``) every subscription too, and ``lose_entities`` the entities."""
        self.notifier.stop()
        if lose_subscriptions:
            self.subscriptions.clear()
        if lose_entities:
            self.entities.clear()
