"""Settings shared by every service, read from the command line and ``BEATS_*`` variables.

Every field is an option: ``data_dir`` is ``--data-dir`` on the command line and
``BEATS_DATA_DIR`` in the environment (the command line wins). Lists take a repeated option
(``--mqtt-topic a --mqtt-topic b``) or, in the environment, a comma-separated or JSON list.
Secrets are ``SecretStr``: they never appear in ``repr``, logs or errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["BeatSettings", "ServiceSettings", "StrList", "split_list"]


def split_list(value: Any) -> Any:
    """Accept ``a,b``, ``["a", "b"]`` or a list for list-valued options."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


StrList = Annotated[list[str], NoDecode]


class CommandSettings(BaseSettings):
    """Options of a ``beats`` command: ``--kebab-case`` flags, ``BEATS_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="BEATS_", cli_kebab_case=True, cli_implicit_flags=True, extra="ignore"
    )


class ServiceSettings(CommandSettings):
    """Options of every service (beats and gateway)."""

    model_config = SettingsConfigDict(cli_hide_none_type=True)

    host: str = Field("127.0.0.1", description="Interface the HTTP server listens on.")
    port: int = Field(0, description="HTTP port (each service has its own default).")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level."
    )
    log_json: bool = Field(False, description="Log one JSON object per line.")
    shutdown_timeout: float = Field(
        10.0, description="Seconds a graceful shutdown may take before tasks are cancelled."
    )
    http_head_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a client has to send a complete request head (slowloris guard).",
    )


class BeatSettings(ServiceSettings):
    """Options of every beat: event log, SSE and Kafka."""

    data_dir: Path = Field(Path("data"), description="Directory of the event log.")
    retention_count: int | None = Field(
        1_000_000, description="Keep at most this many events in the log (unset: no limit)."
    )
    retention_age: float | None = Field(
        7 * 24 * 3600.0, description="Drop events older than this many seconds (unset: keep)."
    )
    log_sync: Literal["normal", "full"] = Field(
        "normal",
        description="SQLite synchronous mode: normal survives a process crash, "
        "full also survives power loss (slower).",
    )
    sse_queue_size: int = Field(
        1000,
        description="Per-subscriber buffer; a subscriber that overflows it is "
        "disconnected and resumes from the log.",
    )
    sse_queue_bytes: int = Field(
        16 * 2**20,
        ge=1024,
        description="Per-subscriber buffer in bytes of event JSON; a subscriber that overflows it "
        "is disconnected and resumes from the log (one larger event is still delivered).",
    )
    sse_page_bytes: int = Field(
        2**20,
        ge=1024,
        description="Bytes of events per replay page read from the log and per chunk written to "
        "an SSE client (one larger event goes alone).",
    )
    sse_heartbeat: float = Field(15.0, description="Seconds between SSE heartbeat comments.")
    sse_send_timeout: float = Field(
        30.0, description="A client that does not take a write for this long is disconnected."
    )
    kafka_bootstrap: str | None = Field(
        None, description="Kafka bootstrap servers, comma-separated (unset: Kafka off)."
    )
    kafka_topic_prefix: str = Field("beats", description="Topics are <prefix>.<beat>.<channel>.")
    kafka_idempotence: bool = Field(
        True, description="Idempotent producer (acks=all). Turn off for brokers without it."
    )
    kafka_timeout: float = Field(10.0, description="Bound, in seconds, on every Kafka call.")
    kafka_partitions: int = Field(1, ge=1, description="Partitions of topics the beat creates.")
    kafka_replication: int = Field(
        1, ge=1, description="Replication factor of topics the beat creates."
    )
    kafka_batch: int = Field(500, ge=1, description="Events per forwarder batch.")
    kafka_batch_bytes: int = Field(
        4 * 2**20,
        ge=1024,
        description="Bytes of events per forwarder batch (at least one event).",
    )
    kafka_max_request_size: int = Field(
        2**20,
        ge=65536,
        description="Largest record the producer sends (Kafka's max.request.size; keep it within "
        "the broker's message.max.bytes). A larger event is produced as a small stand-in record "
        "(its attributes, no data, 'oversize' = its size), logged and counted; the full event "
        "stays on SSE.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password.")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle for Kafka TLS.")

    @field_validator("kafka_bootstrap", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value
