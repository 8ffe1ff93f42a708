"""Options of the HiveMQ (MQTT) beat: ``beats run hivemq``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from common.settings import BeatSettings, StrList, secret_file, split_list

__all__ = ["HivemqSettings"]


class HivemqSettings(BeatSettings):
    """Subscribe to an MQTT broker (3.1.1 or 5) and republish every message."""

    port: int = Field(8101, description="HTTP port.")
    data_dir: Path = Field(Path("data/hivemq"), description="Directory of the event log.")
    mqtt_url: str = Field(
        "mqtt://127.0.0.1:1883",
        description="Broker URL: mqtt://host:1883, mqtts://host:8883 for TLS; "
        "user:password@ in the URL or the separate options.",
    )
    mqtt_topic: StrList = Field(
        default_factory=lambda: ["#"],
        description="Topic filter, repeatable; $share/<group>/<filter> for shared subscriptions.",
    )
    mqtt_channel: StrList = Field(
        default_factory=list,
        description="FILTER=CHANNEL, repeatable: messages matching the filter go to CHANNEL "
        "(first match wins; unmatched go to 'messages').",
    )
    mqtt_version: Literal["3.1.1", "5"] = Field("5", description="MQTT protocol version.")
    mqtt_client_id: str = Field(
        "works-beats-hivemq",
        description="Client id. Keep it stable: the persistent session is bound to it.",
    )
    mqtt_qos: Literal[0, 1, 2] = Field(
        1, description="Subscription QoS (1: acknowledged after commit, see docs/hivemq.md)."
    )
    mqtt_username: str | None = Field(None, description="User name (overrides the URL's).")
    mqtt_password: SecretStr | None = Field(None, description="Password (overrides the URL's).")
    mqtt_password_file: Path | None = secret_file("mqtt_password")
    mqtt_ca_file: Path | None = Field(None, description="CA bundle for mqtts://.")
    mqtt_session_expiry: int = Field(
        86400, description="MQTT 5 session expiry in seconds (persistent session)."
    )
    mqtt_clean_start: bool = Field(
        False, description="Start a fresh session (loses messages queued while the beat was down)."
    )
    mqtt_keepalive: int = Field(30, description="Keep-alive in seconds.")
    mqtt_receive_maximum: int = Field(
        1000, description="MQTT 5 receive maximum: unacknowledged QoS 1/2 messages in flight."
    )
    mqtt_queue_size: int = Field(
        10000,
        description="Messages buffered between the MQTT client and the log; "
        "at this depth reading pauses until half are committed (backpressure).",
    )
    mqtt_queue_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024 * 1024,
        description="Payload bytes buffered between the MQTT client and the log, and again "
        "in commits not yet complete; at this size reading pauses (backpressure).",
    )
    max_payload_bytes: int = Field(
        1024 * 1024, description="Larger payloads are dead-lettered (kept truncated)."
    )

    @field_validator("mqtt_topic", "mqtt_channel", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return split_list(value)

    @model_validator(mode="after")
    def _check_url(self) -> HivemqSettings:
        if urlsplit(self.mqtt_url).scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError("--mqtt-url must start with mqtt:// or mqtts://")
        return self

    def broker(self) -> dict[str, Any]:
        """Host, port, TLS flag and credentials from the URL and the separate options."""
        url = urlsplit(self.mqtt_url)
        tls = url.scheme in ("mqtts", "ssl")
        password = self.mqtt_password.get_secret_value() if self.mqtt_password else None
        if password is None and url.password is not None:
            password = unquote(url.password)
        username = self.mqtt_username or (unquote(url.username) if url.username else None)
        return {
            "hostname": url.hostname or "127.0.0.1",
            "port": url.port or (8883 if tls else 1883),
            "tls": tls,
            "username": username,
            "password": password,
        }

    def channel_map(self) -> list[tuple[str, str]]:
        pairs = []
        for item in self.mqtt_channel:
            topic_filter, sep, channel = item.rpartition("=")
            if not sep or not topic_filter or not channel:
                raise ValueError(f"--mqtt-channel wants FILTER=CHANNEL, got {item!r}")
            pairs.append((topic_filter, channel))
        return pairs
