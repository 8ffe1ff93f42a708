"""Options of the OpenCTI beat: ``beats run opencti``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator

from common.settings import BeatSettings, StrList, secret_file, split_list

__all__ = ["OpenctiSettings"]


class OpenctiSettings(BeatSettings):
    """Consume the OpenCTI live stream (SSE, STIX 2.1) and republish the threat feed."""

    port: int = Field(8103, description="HTTP port.")
    data_dir: Path = Field(Path("data/opencti"), description="Directory of the event log.")
    opencti_url: str = Field("http://127.0.0.1:4000", description="OpenCTI base URL.")
    opencti_token: SecretStr | None = Field(None, description="OpenCTI API token (bearer).")
    opencti_token_file: Path | None = secret_file("opencti_token")
    stream_id: str | None = Field(
        None, description="Live stream id (/stream/<id>); unset: the global /stream."
    )
    opencti_start: str | None = Field(
        None,
        description="Where the first connection starts when no position is saved: 0 (the "
        "beginning), a stream id, or a date; unset: from now.",
    )
    opencti_recover: bool = Field(
        False,
        description="With --opencti-start on a live stream: on the first start, ask OpenCTI "
        "to send the current state of every object first (its 'recover' mode), reaching past "
        "the stream's retention.",
    )
    opencti_read_timeout: float = Field(
        30.0, description="Reconnect when nothing (not even a heartbeat) arrives for this long."
    )
    opencti_max_frame_bytes: int = Field(
        16 * 1024 * 1024,
        ge=64 * 1024,
        description="A stream frame larger than this is not read into memory: it is "
        "dead-lettered (its first 64 KiB kept) and the stream goes on.",
    )
    opencti_channel: StrList = Field(
        default_factory=list,
        description="STIXTYPE=CHANNEL, repeatable: overrides the channel of a STIX type "
        "(defaults: indicators, observables, relationships, reports, entities).",
    )

    opencti_load_markings: bool = Field(
        True,
        description="At start, load the platform's marking definitions from its GraphQL API "
        "(<url>/graphql); markings are also learned from the stream, and unknown ones count "
        "as TLP:RED.",
    )

    @field_validator("opencti_channel", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return split_list(value)

    def stream_url(self) -> str:
        base = self.opencti_url.rstrip("/")
        return f"{base}/stream/{self.stream_id}" if self.stream_id else f"{base}/stream"

    def graphql_url(self) -> str:
        return f"{self.opencti_url.rstrip('/')}/graphql"

    def channel_overrides(self) -> dict[str, str]:
        pairs = {}
        for item in self.opencti_channel:
            stix_type, sep, channel = item.partition("=")
            if not sep or not stix_type or not channel:
                raise ValueError(f"--opencti-channel wants STIXTYPE=CHANNEL, got {item!r}")
            pairs[stix_type] = channel
        return pairs
