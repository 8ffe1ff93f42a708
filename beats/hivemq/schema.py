"""What the HiveMQ beat emits (:mod:`beats.hivemq.normalize`), for its AsyncAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel

from beats.hivemq.normalize import EVENT_TYPE
from common.schema import EventSpec

__all__ = ["DESCRIPTION", "EVENTS", "MqttExtensions", "MqttPayload"]

DESCRIPTION = "MQTT 3.1.1 / 5 messages as CloudEvents (type beats.hivemq.message)."


class MqttPayload(RootModel[Any]):
    """The MQTT payload as sent: JSON stays JSON, other UTF-8 text is a string
    (``datacontenttype`` says which; the MQTT 5 content type when given). A binary payload, or
    JSON that JSON cannot carry back out, comes as ``data_base64`` instead (then
    ``datanote`` says why). The JSON payload ``null`` leaves ``data`` out."""


class MqttExtensions(BaseModel):
    """MQTT metadata as CloudEvents extensions (Integers are signed 32-bit)."""

    model_config = ConfigDict(extra="forbid")

    mqttqos: int = Field(ge=0, le=2, description="The QoS the message was received with.")
    mqttretain: bool = Field(description="Whether it was a retained message.")
    mqttresponsetopic: str | None = Field(None, description="MQTT 5 response topic.")
    mqttcorrelationdata: str | None = Field(None, description="MQTT 5 correlation data, base64.")
    mqttmessageexpiry: str | None = Field(
        None, pattern="^[0-9]+$", description="MQTT 5 message expiry, decimal seconds."
    )
    mqttpayloadformat: int | None = Field(
        None, ge=0, le=1, description="MQTT 5 payload format indicator (1: UTF-8)."
    )
    mqttsubscriptionid: str | None = Field(
        None, description="MQTT 5 subscription identifiers, comma-separated."
    )
    mqttuserproperties: str | None = Field(
        None, description="MQTT 5 user properties: a JSON list of [name, value] pairs."
    )
    datanote: str | None = Field(None, description="Why the payload is in data_base64.")


EVENTS = (
    EventSpec(
        type=EVENT_TYPE,
        data=MqttPayload,
        summary="One MQTT message (subject and partitionkey: its topic).",
        extensions=MqttExtensions,
        binary=True,
    ),
)
