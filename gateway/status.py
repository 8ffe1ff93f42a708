"""``GET /beats``: every beat's readiness, event rates, Kafka lag and subscribers, polled.

One supervised task per beat reads its ``/readyz`` (JSON, 200 or 503) and its ``/metrics``
(parsed with :mod:`prometheus_client.parser`) every ``--status-interval`` seconds. Rates are
the difference of ``beats_events_committed_total`` between two polls over the time between
them. A beat that does not answer is reported ``reachable: false`` with the error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["BeatStatus", "StatusPoller", "parse_metrics"]

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
        except (httpx.HTTPError, ValueError) as exc:
            if status.reachable or status.updated is None:
                _log.warning("beat %s at %s: %s", status.name, status.url, exc or type(exc))
            status.unreachable(str(exc) or type(exc).__name__)

    @property
    def ready(self) -> bool:
        """Ready when no beat is configured or at least one answered ready at its last poll."""
        return not self.statuses or any(s.ready for s in self.statuses.values())
