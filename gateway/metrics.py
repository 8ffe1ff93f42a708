"""Prometheus metrics of the gateway (``beats_gateway_*``), in a registry of its own."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, generate_latest

from common.metrics import service_registry

__all__ = ["GatewayMetrics"]


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = service_registry()
        r = self.registry
        p = "beats_gateway_"
        self.clients = Gauge(p + "clients", "Connected SSE clients", registry=r)
        self.connections = Counter(p + "client_connections", "SSE streams accepted", registry=r)
        self.rejected = Counter(
            p + "streams_rejected", "Streams refused because --max-streams was reached", registry=r
        )
        self.refused = Counter(
            p + "streams_refused",
            "Streams refused by a cap: max_streams, token_streams (--max-streams-per-token), "
            "upstreams (--max-upstreams)",
            ["reason"],
            registry=r,
        )
        self.upstreams = Gauge(p + "upstreams", "Open upstream streams (beat, channel)", registry=r)
        self.upstream_connected = Gauge(
            p + "upstreams_connected", "Upstream streams currently connected", registry=r
        )
        self.upstream_reconnects = Counter(
            p + "upstream_reconnects",
            "Upstream streams reopened (with Last-Event-ID) after a drop",
            ["beat"],
            registry=r,
        )
        self.upstream_events = Counter(
            p + "upstream_events", "Events received from the beats", ["beat"], registry=r
        )
        self.overflow = Counter(
            p + "overflow_disconnects",
            "Clients disconnected because their queue overflowed",
            registry=r,
        )
        self.send_timeouts = Counter(
            p + "client_send_timeouts",
            "SSE clients disconnected because a write waited --sse-send-timeout",
            registry=r,
        )
        self.replays = Counter(
            p + "replays", "Client replays by where they were served from", ["source"], registry=r
        )
        self.gaps = Counter(p + "gap_signals", "beats.gap signals passed to clients", registry=r)
        self.auth_failures = Counter(
            p + "auth_failures", "Refused requests by reason", ["reason"], registry=r
        )
        self.filtered = Counter(
            p + "filtered_events",
            "Events not sent to a client, by reason (filter or tlp)",
            ["reason"],
            registry=r,
        )
        self.restarts = Counter(
            p + "task_restarts", "Supervised task restarts after a failure", ["task"], registry=r
        )
        self.http_head_timeouts = Counter(
            p + "http_head_timeouts",
            "Connections closed for not sending a complete request head in time",
            registry=r,
        )
        self.http_rejected = Counter(
            p + "http_rejected",
            "Requests refused or aborted while sending their body, by reason: too_large (413), "
            "body_timeout (408), disconnected (the client went away mid-body)",
            ["reason"],
            registry=r,
        )

        self.kafka_connected = Gauge(
            p + "kafka_connected", "1 while the Kafka-mode consumer is connected", registry=r
        )
        self.kafka_reconnects = Counter(
            p + "kafka_reconnects", "Kafka-mode consumer reconnects after a failure", registry=r
        )
        self.kafka_lag = Gauge(
            p + "kafka_lag",
            "Records of a topic's partitions with clients not yet read by this gateway",
            ["topic"],
            registry=r,
        )
        self.kafka_rejected = Counter(
            p + "kafka_rejected",
            "Kafka records skipped because they are not structured CloudEvents",
            ["beat"],
            registry=r,
        )
        self.kafka_duplicates = Counter(
            p + "kafka_duplicates",
            "Kafka records not sent because their CloudEvent id was just delivered",
            ["beat"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
