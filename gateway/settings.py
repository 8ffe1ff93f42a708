"""Options of the gateway: ``beats run gateway``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from common.settings import KafkaClientSettings, StrList, split_list

__all__ = ["GatewaySettings", "parse_beats"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def parse_beats(specs: list[str]) -> dict[str, str | None]:
    """``["hivemq=http://127.0.0.1:8101", "fiware"]`` →
    ``{"hivemq": "http://127.0.0.1:8101", "fiware": None}`` (``None``: read from Kafka)."""
    beats: dict[str, str | None] = {}
    for spec in specs:
        name, sep, url = spec.partition("=")
        name, url = name.strip(), url.strip().rstrip("/")
        if not _NAME.match(name):
            raise ValueError(
                f"--beat must be NAME or NAME=URL with a lower-case name, got {spec!r}"
            )
        if name in beats:
            raise ValueError(f"--beat {name} is given twice")
        if not sep:
            beats[name] = None
            continue
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise ValueError(f"--beat {name}: the URL must be http(s)://host:port, got {url!r}")
        beats[name] = url
    return beats


class GatewaySettings(KafkaClientSettings):
    """Front the beats: SSE fan-out with replay and filters, auth, status, dashboard."""

    port: int = Field(8080, description="HTTP port.")
    beat: StrList = Field(
        default_factory=list,
        description="A beat to front, repeatable: NAME=URL reads its SSE stream (e.g. "
        "hivemq=http://127.0.0.1:8101); NAME alone reads its Kafka topics "
        "<--kafka-topic-prefix>.NAME.* (Kafka mode, needs --kafka-bootstrap).",
    )
    dedupe_window: int = Field(
        4096,
        ge=0,
        description="Kafka mode: CloudEvent ids remembered per partition; an event whose id is "
        "among them is a redelivery and is not sent again (0: no deduplication).",
    )
    tokens_file: Path | None = Field(
        None,
        description="YAML or JSON file of bearer tokens and their scopes "
        "(unset: the gateway is open to everyone, with a warning at start-up).",
    )
    max_streams: int = Field(
        10_000, ge=1, description="Concurrent SSE streams; beyond it 503 with Retry-After."
    )
    max_streams_per_token: int = Field(
        100,
        ge=1,
        description="Concurrent SSE streams one token may hold (with --tokens-file); beyond "
        "it 503 with Retry-After.",
    )
    max_upstreams: int = Field(
        256,
        ge=1,
        description="Upstream streams (beat, channel) the gateway may hold open; a stream "
        "that needs one more gets 503 with Retry-After.",
    )
    public_paths: StrList = Field(
        default_factory=lambda: ["/"],
        description="Gateway pages served without a token, from /, /docs, /redoc, "
        "/openapi.json, /asyncapi.json, /metrics (others need a valid token; /metrics the "
        "admin or metrics scope). "
        "Default: the dashboard page (/), which holds no data.",
    )
    retry_after: int = Field(
        5, ge=1, description="Seconds in Retry-After when --max-streams is reached."
    )
    client_queue_size: int = Field(
        1000,
        ge=1,
        description="Per-client buffer; a client that overflows it is disconnected with a "
        "retry: hint and resumes with Last-Event-ID.",
    )
    client_queue_bytes: int = Field(
        16 * 2**20,
        ge=1024,
        description="Per-client buffer in bytes of events; a client that overflows it is "
        "disconnected with a retry: hint and resumes with Last-Event-ID (one larger event "
        "is still delivered).",
    )
    ring_size: int = Field(
        10_000,
        ge=0,
        description="Recent events kept in memory per upstream stream for replays; older "
        "replays are read from the beat.",
    )
    ring_bytes: int = Field(
        32 * 2**20,
        ge=0,
        description="Bytes of recent events kept per upstream stream (the ring holds at most "
        "--ring-size events and this many bytes; the oldest go first).",
    )
    cors_origins: StrList = Field(
        default_factory=list,
        description="Origins allowed by CORS, repeatable ('*' for any; unset: no CORS headers).",
    )
    sse_heartbeat: float = Field(15.0, description="Seconds between SSE heartbeat comments.")
    sse_send_timeout: float = Field(
        30.0, description="A client that does not take a write for this long is disconnected."
    )
    upstream_linger: float = Field(
        30.0,
        ge=0,
        description="Seconds an upstream stream stays open after its last client left "
        "(a client coming back soon finds it and its ring still there).",
    )
    upstream_read_timeout: float = Field(
        45.0, description="Seconds without a byte from a beat before its stream is reopened."
    )
    status_interval: float = Field(
        2.0, gt=0, description="Seconds between polls of every beat's /readyz and /metrics."
    )

    @field_validator("public_paths")
    @classmethod
    def _check_public(cls, value: list[str]) -> list[str]:
        unknown = set(value) - {
            "/", "/docs", "/redoc", "/openapi.json", "/asyncapi.json", "/metrics"
        }  # fmt: skip
        if unknown:
            raise ValueError(f"--public-paths: not gateway pages: {sorted(unknown)}")
        return value

    @field_validator("beat", "cors_origins", "public_paths", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return split_list(value)

    @field_validator("beat")
    @classmethod
    def _check_beats(cls, value: list[str]) -> list[str]:
        parse_beats(value)
        return value

    @model_validator(mode="after")
    def _kafka_for_topics(self) -> GatewaySettings:
        topics = [name for name, url in self.beats.items() if url is None]
        if topics and not self.kafka_bootstrap:
            raise ValueError(
                f"--beat {topics[0]} without a URL is read from Kafka: give --kafka-bootstrap"
            )
        return self

    @property
    def beats(self) -> dict[str, str | None]:
        """The fronted beats, name → base URL (``None``: read from its Kafka topics)."""
        return parse_beats(self.beat)

    @property
    def url_beats(self) -> dict[str, str]:
        return {name: url for name, url in self.beats.items() if url is not None}

    @property
    def kafka_beats(self) -> list[str]:
        return [name for name, url in self.beats.items() if url is None]
