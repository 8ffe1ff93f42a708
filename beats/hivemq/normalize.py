"""MQTT message → CloudEvent. Pure: no I/O, total (bad input raises ``Rejected``).

Shape of a ``beats.hivemq.message`` event:

* ``subject`` and ``partitionkey``: the MQTT topic; ``time``: when the beat received it (MQTT
  has no timestamp of its own);
* the payload, losslessly: JSON stays JSON in ``data``; other UTF-8 text is a string;
  anything else is ``data_base64``; ``datacontenttype`` is the MQTT 5 content type when given.
  JSON that JSON cannot carry back out (a lone surrogate such as ``"\ud800"``, a number beyond
  a double such as ``1e400``, nesting deeper than 64 levels: :mod:`common.jsonsafe`) is kept
  byte for byte in ``data_base64``, with the reason in the ``datanote`` extension;
* MQTT metadata as extensions, each within the CloudEvents type system (an Integer is a signed
  32-bit integer; a source value whose range is wider goes out as a String, whatever its value,
  so the extension's type never changes): ``mqttqos`` (Integer 0 to 2), ``mqttretain`` (Boolean)
  and, for MQTT 5, ``mqttresponsetopic`` (String), ``mqttcorrelationdata`` (String, base64),
  ``mqttmessageexpiry`` (String: the decimal seconds — MQTT's four-byte integer reaches
  4294967295, beyond Integer), ``mqttpayloadformat`` (Integer 0 or 1), ``mqttsubscriptionid``
  (String: the comma-separated identifiers) and ``mqttuserproperties`` (String: a JSON list of
  ``[name, value]`` pairs, order and repeats kept).

Rejected: payloads over the size limit, a payload that MQTT 5 declares UTF-8
(payload format indicator 1) but is not, and a payload declared JSON that does not parse.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from paho.mqtt.client import topic_matches_sub

from common.envelope import CloudEvent, new_event, payload_to_data
from common.normalize import Rejected

__all__ = [
    "DEFAULT_CHANNEL",
    "EVENT_TYPE",
    "MqttMessage",
    "channel_for",
    "normalize",
    "properties_from_paho",
]

EVENT_TYPE = "beats.hivemq.message"
DEFAULT_CHANNEL = "messages"


@dataclass(frozen=True)
class MqttMessage:
    """What the source hands over: one received PUBLISH, properties as plain values."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    received_at: datetime
    properties: dict[str, Any] = field(default_factory=dict)


def channel_for(topic: str, mapping: Sequence[tuple[str, str]]) -> str:
    """The channel of the first ``(filter, channel)`` pair whose filter matches ``topic``."""
    for topic_filter, channel in mapping:
        if topic_matches_sub(_strip_share(topic_filter), topic):
            return channel
    return DEFAULT_CHANNEL


def _strip_share(topic_filter: str) -> str:
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        return parts[2] if len(parts) == 3 else topic_filter
    return topic_filter


def normalize(
    message: MqttMessage,
    *,
    source: str,
    channel: str = DEFAULT_CHANNEL,
    max_payload: int = 1024 * 1024,
) -> list[CloudEvent]:
    if len(message.payload) > max_payload:
        raise Rejected(f"payload of {len(message.payload)} bytes exceeds {max_payload}")
    props = message.properties
    content_type = props.get("content_type")
    body = _payload(message.payload, content_type, props.get("payload_format"))
    return [
        new_event(
            beat="hivemq",
            type=EVENT_TYPE,
            source=source,
            channel=channel,
            subject=message.topic,
            partitionkey=message.topic,
            time=message.received_at,
            mqttqos=message.qos,
            mqttretain=message.retain,
            **body,
            **_property_extensions(props),
        )
    ]


def _payload(
    payload: bytes, content_type: str | None, payload_format: int | None
) -> dict[str, Any]:
    if payload_format == 1:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            raise Rejected("payload format indicator says UTF-8 but the payload is not") from None
    declared_json = content_type is not None and "json" in content_type
    return payload_to_data(payload, content_type, require_json=declared_json)


def _property_extensions(props: dict[str, Any]) -> dict[str, Any]:
    extensions: dict[str, Any] = {}
    if "response_topic" in props:
        extensions["mqttresponsetopic"] = props["response_topic"]
    if "correlation_data" in props:
        extensions["mqttcorrelationdata"] = base64.b64encode(props["correlation_data"]).decode()
    if "message_expiry" in props:
        extensions["mqttmessageexpiry"] = str(int(props["message_expiry"]))
    if "payload_format" in props:
        extensions["mqttpayloadformat"] = props["payload_format"]
    if "subscription_ids" in props:
        extensions["mqttsubscriptionid"] = ",".join(str(i) for i in props["subscription_ids"])
    if props.get("user_properties"):
        pairs = [[str(k), str(v)] for k, v in props["user_properties"]]
        extensions["mqttuserproperties"] = json.dumps(pairs, separators=(",", ":"))
    return extensions


def properties_from_paho(properties: Any) -> dict[str, Any]:
    """Plain values from paho's MQTT 5 ``Properties`` (``None`` for MQTT 3.1.1)."""
    if properties is None:
        return {}
    names = {
        "ContentType": "content_type",
        "ResponseTopic": "response_topic",
        "CorrelationData": "correlation_data",
        "MessageExpiryInterval": "message_expiry",
        "PayloadFormatIndicator": "payload_format",
        "UserProperty": "user_properties",
        "SubscriptionIdentifier": "subscription_ids",
    }
    values: dict[str, Any] = {}
    for paho_name, name in names.items():
        if hasattr(properties, paho_name):
            values[name] = getattr(properties, paho_name)
    return values
