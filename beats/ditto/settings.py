"""Options of the Ditto beat: ``beats run ditto``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator

from common.settings import BeatSettings, StrList, secret_file, split_list

__all__ = ["DittoSettings"]


class DittoSettings(BeatSettings):
    """Register with Eclipse Ditto for twin events and live messages over its WebSocket."""

    port: int = Field(8104, description="HTTP port.")
    data_dir: Path = Field(Path("data/ditto"), description="Directory of the event log.")
    ditto_url: str = Field(
        "http://127.0.0.1:8090", description="Ditto base URL (the WebSocket is <url>/ws/2)."
    )
    ditto_username: str | None = Field(None, description="Basic-auth user name.")
    ditto_password: SecretStr | None = Field(None, description="Basic-auth password.")
    ditto_password_file: Path | None = secret_file("ditto_password")
    ditto_token: SecretStr | None = Field(None, description="Bearer token (JWT) instead.")
    ditto_token_file: Path | None = Field(
        None,
        description="Read the bearer token from this file; when it changes, the beat sends "
        "it on the open socket (JWT-TOKEN) so the session survives the old token's expiry.",
    )
    namespaces: StrList = Field(
        default_factory=list, description="Only things of these namespaces (comma list)."
    )
    filter: str | None = Field(None, description="RQL filter for twin events.")
    extra_fields: str | None = Field(None, description="extraFields to enrich events with.")
    live_events: bool = Field(False, description="Also subscribe to live events.")
    reconcile: bool = Field(
        True,
        description="After a reconnect, emit snapshots of the things seen (or of the "
        "namespaces) read over Ditto's HTTP API.",
    )
    ditto_ping_interval: float = Field(
        20.0, description="WebSocket ping every this many seconds; no pong in as long: reconnect."
    )
    ditto_ack_timeout: float = Field(10.0, description="Seconds to wait for each :ACK.")
    ditto_max_message_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="A protocol message larger than this is dead-lettered (its first 64 KiB "
        "and digest kept); the WebSocket accepts up to twice as much, so such a message does "
        "not cost the session (Ditto does not replay what a closed session missed).",
    )
    ditto_buffer: int = Field(
        100_000,
        description="Messages buffered between the socket and the log; beyond it the "
        "beat drops (counted) and reconnects to reconcile.",
    )

    ditto_buffer_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024 * 1024,
        description="Bytes buffered between the socket and the log (besides --ditto-buffer); "
        "beyond it the beat drops (counted) and reconnects to reconcile.",
    )

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return split_list(value)

    def ws_url(self) -> str:
        base = self.ditto_url.rstrip("/")
        scheme, _, rest = base.partition("://")
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws/2"
