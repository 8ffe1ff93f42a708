"""Prometheus metrics of one service, in a registry of its own.

Each service owns a :class:`Metrics` (so several services can share a process, as in
``beats demo``). Every counter the brief asks for lives here, so ``/metrics`` is the one place an
operator looks: events in and out, rejections, SSE subscribers and overflow disconnects, Kafka lag,
reconnects and task restarts. Every registry also carries the process, platform and garbage
collector collectors (``process_resident_memory_bytes``, ``process_cpu_seconds_total``,
``process_open_fds``, ``python_gc_*``, ``python_info``).
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

__all__ = ["Metrics", "service_registry"]


def service_registry() -> CollectorRegistry:
    """A registry of one service, with the process, platform and GC collectors."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class Metrics:
    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = service_registry()
        r = self.registry
        ch = ["channel"]
        self.received = Counter(
            "beats_events_received", "Raw inputs received from the source", registry=r
        )
        self.committed = Counter(
            "beats_events_committed", "Events committed to the log", ch, registry=r
        )
        self.duplicates = Counter(
            "beats_events_duplicate",
            "Events skipped because their id was already in the log",
            registry=r,
        )
        self.rejected = Counter(
            "beats_events_rejected", "Inputs rejected by the normaliser", registry=r
        )
        self.dead_lettered = Counter(
            "beats_events_dead_lettered",
            "Rejected inputs kept in the dead-letter channel",
            registry=r,
        )
        self.dropped = Counter(
            "beats_source_dropped",
            "Inputs dropped before the log, by reason",
            ["reason"],
            registry=r,
        )
        self.source_errors = Counter(
            "beats_source_errors",
            "Source-side failures that did not stop it",
            ["kind"],
            registry=r,
        )
        self.append_errors = Counter("beats_log_append_errors", "Failed log commits", registry=r)
        self.log_failures = Counter(
            "beats_log_failures",
            "Failures inside the log's writer that it survived (storage, unexpected, listener)",
            ["kind"],
            registry=r,
        )
        self.log_recoveries = Counter(
            "beats_log_recoveries",
            "Sequence ranges given up at start-up (lost: evidence of lost commits; skipped: "
            "after an unclean stop)",
            ["kind"],
            registry=r,
        )
        self.append_seconds = Histogram(
            "beats_log_append_seconds",
            "Time of one group commit",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.log_head = Gauge("beats_log_head_sequence", "Newest sequence in the log", registry=r)
        self.log_oldest = Gauge("beats_log_oldest_sequence", "Oldest sequence kept", registry=r)
        self.sse_subscribers = Gauge(
            "beats_sse_subscribers", "Connected SSE subscribers", registry=r
        )
        self.sse_connections = Counter(
            "beats_sse_connections", "SSE connections accepted", registry=r
        )
        self.sse_overflow = Counter(
            "beats_sse_overflow_disconnects",
            "SSE subscribers disconnected because their queue overflowed",
            registry=r,
        )
        self.sse_send_timeouts = Counter(
            "beats_sse_send_timeouts",
            "SSE clients disconnected because a write waited --sse-send-timeout",
            registry=r,
        )
        self.sse_gaps = Counter(
            "beats_sse_gap_signals", "Replays that asked for ids older than retention", registry=r
        )
        self.kafka_produced = Counter(
            "beats_kafka_produced", "Events acknowledged by Kafka", ch, registry=r
        )
        self.kafka_oversize = Counter(
            "beats_kafka_oversize",
            "Events too large for Kafka, produced as a stand-in record without data",
            ch,
            registry=r,
        )
        self.kafka_errors = Counter(
            "beats_kafka_errors", "Kafka failures by kind", ["kind"], registry=r
        )
        self.kafka_lag = Gauge(
            "beats_kafka_lag", "Committed events not yet acknowledged by Kafka", registry=r
        )
        self.kafka_in_flight = Gauge(
            "beats_kafka_in_flight", "Events sent, awaiting ack", registry=r
        )
        self.kafka_connected = Gauge(
            "beats_kafka_connected", "1 when the producer is up", registry=r
        )
        self.source_queue = Gauge(
            "beats_source_queue_depth", "Inputs received but not yet handed to the log", registry=r
        )
        self.source_paused = Gauge(
            "beats_source_paused",
            "Times the source paused reading because the beat was behind",
            registry=r,
        )
        self.source_connected = Gauge(
            "beats_source_connected", "1 when the source is connected", registry=r
        )
        self.reconnects = Counter(
            "beats_source_reconnects", "Source reconnect attempts", registry=r
        )
        self.restarts = Counter(
            "beats_task_restarts", "Supervised task restarts after a failure", ["task"], registry=r
        )
        self.http_head_timeouts = Counter(
            "beats_http_head_timeouts",
            "Connections closed for not sending a complete request head in time",
            registry=r,
        )
        self.http_rejected = Counter(
            "beats_http_rejected",
            "Requests refused or aborted while sending their body, by reason: too_large (413), "
            "body_timeout (408, body not complete in --http-body-timeout), "
            "disconnected (the client went away mid-body)",
            ["reason"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
