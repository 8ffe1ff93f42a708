"""Options of the FIWARE beat: ``beats run fiware``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

from common.settings import BeatSettings, StrList, secret_file, split_list

__all__ = ["FiwareSettings"]

CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"


class FiwareSettings(BeatSettings):
    """Subscribe to Orion (NGSI v2) or an NGSI-LD broker and republish every entity change."""

    port: int = Field(8102, description="HTTP port (also where /notify listens).")
    data_dir: Path = Field(Path("data/fiware"), description="Directory of the event log.")
    orion_url: str = Field("http://127.0.0.1:1026", description="Context broker base URL.")
    ngsi: Literal["v2", "ld"] = Field("v2", description="NGSI v2 (Orion) or NGSI-LD.")
    notify_url: str = Field(
        "http://127.0.0.1:8102/notify",
        description="The URL the broker calls back (this beat's /notify as the broker sees it).",
    )
    entity_type: StrList = Field(
        default_factory=list, description="Entity types to subscribe to (comma list; unset: all)."
    )
    id_pattern: str = Field(".*", description="Entity id pattern (regular expression).")
    watched_attributes: StrList = Field(
        default_factory=list, description="Notify on changes of these attributes (unset: any)."
    )
    q: str | None = Field(None, description="Query filter of the subscription (NGSI q).")
    attrs_format: str = Field(
        "normalized", description="Notification format: v2 attrsFormat or LD format."
    )
    notify_attributes: StrList = Field(
        default_factory=list,
        description="Attributes the notifications carry (v2 notification.attrs, LD "
        "notification.attributes; comma list; unset: all); their order names the columns of "
        "the v2 values format.",
    )
    ld_accept: Literal["application/json", "application/ld+json", "application/geo+json"] = Field(
        "application/json",
        description="Media type NGSI-LD notifications are asked in (endpoint.accept): "
        "application/json (@context in a Link header), application/ld+json (@context in "
        "the body) or application/geo+json (a GeoJSON FeatureCollection, one Feature per "
        "entity).",
    )
    fiware_service: StrList = Field(
        default_factory=list,
        description="Tenants (Fiware-Service / NGSILD-Tenant), comma list; one subscription "
        "each (unset: the default tenant).",
    )
    fiware_servicepath: str = Field("/", description="Fiware-ServicePath of the subscriptions.")
    ld_context: str = Field(CORE_CONTEXT, description="@context of NGSI-LD subscriptions.")
    notify_secret: SecretStr | None = Field(
        None,
        description="Shared secret the broker sends in X-Beats-Secret (put into the "
        "subscription by the beat); unset: generated once and kept in the event log.",
    )
    notify_secret_file: Path | None = secret_file("notify_secret")
    subscription_tag: str = Field(
        "works-beats-fiware",
        description="Recognises this beat's subscriptions: their description is "
        "works-beats:<tag>:<digest of the notification URL, subject and format>, so replicas "
        "with the same options share one subscription.",
    )
    subscription_check_interval: float = Field(
        30.0, description="Seconds between subscription checks (re-create, re-activate)."
    )
    max_fails_limit: int | None = Field(
        None, description="Orion maxFailsLimit of the subscription (unset: Orion's default)."
    )
    throttling: int | None = Field(None, description="Subscription throttling in seconds.")
    remove_subscriptions: bool = Field(
        False,
        description="Delete this beat's subscriptions on shutdown, unless another replica "
        "still answers at --notify-url.",
    )
    max_body_bytes: int = Field(1024 * 1024, description="Larger notifications get 413.")
    writeback_token: SecretStr | None = Field(
        None,
        description="Bearer token /writeback requires (unset: /writeback is refused unless "
        "--writeback-open).",
    )
    writeback_token_file: Path | None = secret_file("writeback_token")
    writeback_open: bool = Field(
        False,
        description="Let /writeback change the broker's entities without a token (development "
        "only; logged as a warning at start).",
    )

    @field_validator(
        "entity_type", "watched_attributes", "notify_attributes", "fiware_service", mode="before"
    )
    @classmethod
    def _split(cls, value: Any) -> Any:
        return split_list(value)

    def tenants(self) -> list[str | None]:
        return list(self.fiware_service) or [None]
