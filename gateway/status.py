"""``GET /beats``: every beat's readiness, event rates, Kafka lag and subscribers, polled.

One supervised task per beat reads its ``/readyz`` (JSON, 200 or 503) and its ``/metrics``
(parsed with :mod:`prometheus_client.parser`) every ``--status-interval`` seconds. Rates are
the difference of ``beats_events_committed_total`` between two polls over the time between
them. A beat that does not answer is reported ``reachable: false`` with the error. The
beat's channels (``GET /channels``) are read at each poll too: the gateway opens no stream to a
channel a beat does not have.

What a token sees of a report (:func:`visible_report`): the ``admin`` scope everything; a token
with the whole beat its readiness (checks without their details, which name internal URLs),
log, rates, Kafka state and the gateway's streams of it; a token with some channels of it only
readiness and the rates, event counts and gateway streams of those channels. Never the beat's
URL or error messages without ``admin``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from gateway.auth import Principal

__all__ = ["BeatStatus", "StatusPoller", "parse_metrics", "visible_report"]

_log = logging.getLogger(__name__)


def parse_metrics(text: str) -> dict[str, Any]:
    """The figures the gateway shows, from a beat's Prometheus text."""
    committed: dict[str, float] = {}
    scalars: dict[str, float] = {}
    wanted = {
        "beats_kafka_lag": "kafka_lag",
        "beats_kafka_connected": "kafka_connected",
        "beats_sse_subscribers": "subscribers",
        "beats_source_connected": "source_connected",
        "beats_log_head_sequence": "log_head",
        "beats_events_dead_lettered_total": "dead_lettered",
        "beats_events_rejected_total": "rejected",
    }
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "beats_events_committed_total":
                channel = sample.labels.get("channel", "")
                committed[channel] = committed.get(channel, 0.0) + sample.value
            elif sample.name in wanted:
                scalars[wanted[sample.name]] = sample.value
    return {"committed": committed, **scalars}


@dataclass
class BeatStatus:
    name: str
    url: str
    reachable: bool = False
    ready: bool = False
    readiness: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    updated: float | None = None
    channels: frozenset[str] | None = None
    channels_known: bool = False
    _previous: tuple[float, dict[str, float]] | None = None

    def report(self) -> dict[str, Any]:
        committed: dict[str, float] = self.metrics.get("committed", {})
        return {
            "name": self.name,
            "url": self.url,
            "reachable": self.reachable,
            "ready": self.ready,
            "checks": self.readiness.get("checks", {}),
            "log": self.readiness.get("log", {}),
            "rate": round(sum(self.rates.values()), 3),
            "rates": {channel: round(rate, 3) for channel, rate in self.rates.items()},
            "events": int(sum(committed.values())),
            "kafka": self.readiness.get("kafka"),
            "subscribers": int(self.metrics.get("subscribers", 0)),
            "error": self.error,
            "updated": self.updated,
        }

    def update(self, readiness: dict[str, Any], metrics: dict[str, Any], now: float) -> None:
        committed: dict[str, float] = metrics["committed"]
        if self._previous is not None and now > self._previous[0]:
            then, before = self._previous
            self.rates = {
                channel: max(0.0, count - before.get(channel, 0.0)) / (now - then)
                for channel, count in committed.items()
            }
        self._previous = (now, committed)
        self.readiness, self.metrics = readiness, metrics
        self.reachable, self.ready = True, bool(readiness.get("ready"))
        self.error, self.updated = None, time.time()

    def unreachable(self, error: str) -> None:
        self.reachable = self.ready = False
        self.channels_known = False
        self.rates = {}
        self._previous = None
        self.error, self.updated = error, time.time()


class StatusPoller:
    def __init__(self, beats: dict[str, str], *, http: httpx.AsyncClient, interval: float) -> None:
        self.interval = interval
        self.statuses = {name: BeatStatus(name, url) for name, url in beats.items()}
        self._http = http

    async def run(self, name: str) -> None:
        """Poll one beat forever."""
        status = self.statuses[name]
        while True:
            await self.poll(status)
            await asyncio.sleep(self.interval)

    async def poll(self, status: BeatStatus) -> None:
        try:
            ready = await self._http.get(f"{status.url}/readyz")
            metrics = await self._http.get(f"{status.url}/metrics")
            metrics.raise_for_status()
            readiness = ready.json()
            if not isinstance(readiness, dict):
                raise ValueError("/readyz is not a JSON object")
            parsed = parse_metrics(metrics.text)
            status.update(readiness, parsed, asyncio.get_running_loop().time())
            await self._channels(status)
        except (httpx.HTTPError, ValueError) as exc:
            if status.reachable or status.updated is None:
                _log.warning("beat %s at %s: %s", status.name, status.url, exc or type(exc))
            status.unreachable(str(exc) or type(exc).__name__)

    async def _channels(self, status: BeatStatus) -> None:
        """Read once per reachable spell (a beat that went away may come back with others)."""
        if status.channels_known:
            return
        response = await self._http.get(f"{status.url}/channels")
        listed = response.json().get("channels") if response.status_code == 200 else None
        if response.status_code == 200 and (listed is None or isinstance(listed, list)):
            status.channels = None if listed is None else frozenset(map(str, listed))
            status.channels_known = True

    @property
    def ready(self) -> bool:
        """Ready when no beat is configured or at least one answered ready at its last poll."""
        return not self.statuses or any(s.ready for s in self.statuses.values())


_WHOLE_BEAT = ("name", "reachable", "ready", "log", "rate", "rates", "events", "subscribers",
               "updated", "gateway")  # fmt: skip


def visible_report(
    report: dict[str, Any], principal: Principal, channels: list[str]
) -> dict[str, Any]:
    """What ``principal`` may see of one beat's ``report`` (see the module docstring);
    ``channels``: the channels its scopes name one by one (used without the whole beat)."""
    if principal.admin:
        return report
    checks = {name: {"ok": check.get("ok")} for name, check in report["checks"].items()}
    if principal.allows(report["name"]):
        shown = {key: report[key] for key in _WHOLE_BEAT}
        kafka = report.get("kafka")
        shown["kafka"] = None if kafka is None else {k: kafka.get(k) for k in ("connected", "lag")}
        return {**shown, "checks": checks}
    rates = {c: r for c, r in report["rates"].items() if c in channels}
    return {
        "name": report["name"],
        "reachable": report["reachable"],
        "ready": report["ready"],
        "checks": checks,
        "rate": round(sum(rates.values()), 3),
        "rates": rates,
        "channels": channels,
        "updated": report["updated"],
        "gateway": [s for s in report["gateway"] if s["channel"] in channels],
    }
