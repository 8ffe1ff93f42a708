"""AsyncAPI 3.0 documents generated from the code: a beat's, the gateway's, the whole system's.

What a document holds (nothing in it is written by hand):

* **servers**: the beat's (or gateway's) HTTP server, whose SSE streams are channels, and the
  Kafka cluster when the beat forwards to Kafka;
* **channels**: ``/events`` and ``/events/<channel>`` for each channel of the beat (SSE),
  ``<prefix>.<beat>.<channel>`` for each Kafka topic; on the gateway ``/streams``,
  ``/streams/<beat>`` and ``/streams/<beat>/{channel}``;
* **operations**: one ``send`` per channel (the document describes the beat, which sends; a
  consumer receives), with the HTTP binding of the SSE request (``GET``, its query);
* **messages**: one per event type (:class:`~common.schema.EventSpec`, declared in
  ``beats/<beat>/schema.py``), whose payload is the CloudEvents envelope (structured mode, as
  ``CloudEvent.to_json`` writes it plus ``sequence``) with ``data`` the type's schema; plus
  ``beats.gap`` on SSE channels (the replay gap signal, not a CloudEvent);
* **components.schemas**: each type's data schema, with ``$id`` = the events' ``dataschema``.

On SSE each message is one frame: ``id:`` the sequence (the gateway's merged stream: a
position vector), ``event:`` the type, ``data:`` the envelope. On Kafka the record's key is
``partitionkey`` and its value the envelope, with the header ``content-type:
application/cloudevents+json``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.envelope import CloudEvent
from common.schema import (
    DEAD_LETTER_CHANNEL,
    EventSpec,
    GapSignal,
    dataschema_uri,
    json_schema,
)

__all__ = ["GAP_EVENT", "Document", "Publisher", "beat_document", "gateway_document"]

VERSION = "0.1.0"
GAP_EVENT = "beats.gap"
_CE_JSON = "application/cloudevents+json"
_REQUIRED = ("specversion", "id", "source", "type", "beat", "partitionkey", "sequence", "time")
_LAST_ID = {
    "type": "string",
    "pattern": "^[0-9]+$",
    "description": "Resume after this sequence (0: everything kept); or the Last-Event-ID header.",
}
_SSE = (
    "Server-Sent Events (text/event-stream): each message is one frame, id: the sequence, "
    "event: the type, data: the CloudEvent (structured JSON). Resume with Last-Event-ID. "
)


@dataclass(frozen=True)
class Publisher:
    """One beat as its document shows it: its event types (the dead letters included), its
    channels, where its HTTP server is and its Kafka topic prefix (``None``: no Kafka)."""

    name: str
    events: tuple[EventSpec, ...]
    channels: tuple[str, ...]
    http: str
    kafka_prefix: str | None = None
    description: str = ""

    def events_on(self, channel: str | None) -> list[EventSpec]:
        """The types that can be on ``channel`` (``None``: on any)."""
        return [
            spec
            for spec in self.events
            if channel is None
            or (channel in spec.channels if spec.channels else channel != DEAD_LETTER_CHANNEL)
        ]


@dataclass
class Document:
    """An AsyncAPI 3.0 document under construction."""

    title: str
    description: str
    doc: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.doc = {
            "asyncapi": "3.0.0",
            "info": {"title": self.title, "version": VERSION, "description": self.description},
            "defaultContentType": _CE_JSON,
            "servers": {},
            "channels": {},
            "operations": {},
            "components": {"schemas": {}, "messages": {}},
        }

    def server(self, key: str, *, host: str, protocol: str, description: str) -> None:
        self.doc["servers"][key] = {
            "host": host,
            "protocol": protocol,
            "description": description,
        }

    def message(self, spec: EventSpec, beat: str) -> str:
        """The event type's message (added once), whose payload is its envelope."""
        components = self.doc["components"]
        if spec.type not in components["messages"]:
            data = {"$id": dataschema_uri(spec.type), **json_schema(spec.data)}
            components["schemas"][spec.type] = data
            components["messages"][spec.type] = {
                "name": spec.type,
                "title": spec.type,
                "summary": spec.summary,
                "contentType": _CE_JSON,
                "payload": envelope_schema(spec, beat),
                "bindings": {
                    "kafka": {
                        "key": {"type": "string", "description": "The event's partitionkey."},
                        "bindingVersion": "0.5.0",
                    }
                },
            }
        return spec.type

    def gap_message(self) -> str:
        messages = self.doc["components"]["messages"]
        if GAP_EVENT not in messages:
            schema = json_schema(GapSignal)
            self.doc["components"]["schemas"][GAP_EVENT] = schema
            messages[GAP_EVENT] = {
                "name": GAP_EVENT,
                "title": GAP_EVENT,
                "summary": "SSE only: the stream skips events it no longer holds.",
                "contentType": "application/json",
                "payload": {"$ref": f"#/components/schemas/{GAP_EVENT}"},
            }
        return GAP_EVENT

    def channel(
        self,
        key: str,
        *,
        address: str,
        server: str,
        messages: Iterable[str],
        description: str,
        query: Mapping[str, Any] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        """A channel and the operation that sends its messages (with an HTTP binding when a
        ``query`` is given: the SSE request)."""
        names = sorted(set(messages))
        channel: dict[str, Any] = {
            "address": address,
            "description": description,
            "servers": [{"$ref": f"#/servers/{server}"}],
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
        }
        if parameters:
            channel["parameters"] = dict(parameters)
        self.doc["channels"][key] = channel
        operation: dict[str, Any] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{key}"},
            "messages": [{"$ref": f"#/channels/{key}/messages/{n}"} for n in names],
        }
        if query is not None:
            operation["bindings"] = {
                "http": {"method": "GET", "query": dict(query), "bindingVersion": "0.3.0"}
            }
        self.doc["operations"][f"{key}-send"] = operation


def envelope_schema(spec: EventSpec, beat: str) -> dict[str, Any]:
    """The CloudEvent of ``spec``'s type as the wire has it: the model's attributes (absent
    rather than null), ``type``, ``beat`` and ``dataschema`` fixed, ``data`` the type's data
    schema, its extensions, and nothing else."""
    schema = json_schema(CloudEvent, omit_none=True)
    properties = schema["properties"]
    properties["type"] = {"const": spec.type, "description": spec.summary}
    properties["beat"] = {"const": beat, "description": "The beat that emitted it."}
    properties["dataschema"] = {
        "const": dataschema_uri(spec.type),
        "description": "The $id of the data schema (absent on Kafka oversize stand-ins).",
    }
    properties["datacontenttype"] = {"type": "string", "description": "The media type of data."}
    properties["data"] = {"$ref": f"#/components/schemas/{spec.type}"}
    if not spec.binary:
        del properties["data_base64"]
    properties["oversize"] = {"type": "integer", "description": "Kafka stand-in: the size."}
    properties["oversizenote"] = {"type": "string", "description": "Kafka stand-in: why."}
    required = list(_REQUIRED)
    if spec.extensions is not None:
        extensions = json_schema(spec.extensions, omit_none=True)
        properties.update(extensions["properties"])
        required += extensions.get("required", [])
    return {
        "type": "object",
        "description": schema.get("description", ""),
        "properties": properties,
        "required": required,
        "additionalProperties": False,
        "if": {"required": ["oversize"]},
        "then": {"description": "A Kafka stand-in for an oversize event: no data."},
        "else": _with_data(spec),
    }


def _with_data(spec: EventSpec) -> dict[str, Any]:
    """Every event but a Kafka stand-in has its ``dataschema`` and its data; where the payload
    can be binary, ``data`` or ``data_base64`` (or neither: a JSON ``null`` payload, which the
    JSON format leaves out)."""
    if not spec.binary:
        return {"required": ["dataschema", "data"]}
    return {"required": ["dataschema"], "not": {"required": ["data", "data_base64"]}}


def _beat_sse(document: Document, beat: Publisher, server: str) -> None:
    gap = document.gap_message()
    for channel in (None, *beat.channels):
        events = [document.message(spec, beat.name) for spec in beat.events_on(channel)]
        address = "/events" if channel is None else f"/events/{channel}"
        what = "every channel" if channel is None else f"the {channel} channel"
        document.channel(
            f"{beat.name}-events" + ("" if channel is None else f"-{channel}"),
            address=address,
            server=server,
            messages=[*events, gap],
            description=f"The {beat.name} beat's events of {what}. " + _SSE,
            query={"type": "object", "properties": {"last_event_id": _LAST_ID}},
        )


def _beat_kafka(document: Document, beat: Publisher, prefix: str, server: str) -> None:
    for channel in beat.channels:
        topic = f"{prefix}.{beat.name}.{channel}"
        document.channel(
            f"{beat.name}-kafka-{channel}",
            address=topic,
            server=server,
            messages=[document.message(s, beat.name) for s in beat.events_on(channel)],
            description=f"The {beat.name} beat's {channel} channel on Kafka: key partitionkey, "
            "value the CloudEvent, header content-type: application/cloudevents+json. An "
            "event larger than Kafka takes is a stand-in without data (oversize, oversizenote).",
        )


def add_beat(document: Document, beat: Publisher, *, kafka: str | None, prefix: str = "") -> None:
    """``beat``'s servers, channels and messages; ``kafka``: the bootstrap servers (``None``:
    no Kafka channels); ``prefix``: of the server keys (several beats in one document)."""
    sse = f"{prefix}sse"
    document.server(
        sse, host=beat.http, protocol="http", description=f"The {beat.name} beat (SSE)."
    )
    _beat_sse(document, beat, sse)
    if kafka is not None and beat.kafka_prefix is not None:
        if "kafka" not in document.doc["servers"]:
            document.server("kafka", host=kafka, protocol="kafka", description="Kafka.")
        _beat_kafka(document, beat, beat.kafka_prefix, "kafka")


def beat_document(beat: Publisher, *, kafka: str | None) -> dict[str, Any]:
    """The AsyncAPI document one beat serves as ``/asyncapi.json``."""
    document = Document(f"{beat.name} beat", beat.description)
    add_beat(document, beat, kafka=kafka)
    return document.doc


def _gateway_query() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "last_event_id": {"type": "string", "description": "Resume position (0: all)."},
            "access_token": {"type": "string", "description": "Bearer token (EventSource)."},
        },
        "additionalProperties": {
            "type": "string",
            "description": "Filters: exact.<attr>, prefix.<attr>, suffix.<attr>, "
            "not.<dialect>.<attr>, any.<dialect>.<attr>, data.<path>, filter (JSON).",
        },
    }


def _gateway_beat(document: Document, beat: Publisher, server: str) -> list[str]:
    """``/streams/<beat>`` and ``/streams/<beat>/{channel}``; the messages of the beat."""
    gap, query = document.gap_message(), _gateway_query()
    events = [document.message(spec, beat.name) for spec in beat.events_on(None)]
    document.channel(
        f"{server}-streams-{beat.name}",
        address=f"/streams/{beat.name}",
        server=server,
        messages=[*events, gap],
        description=f"Every channel of the {beat.name} beat, through the gateway. " + _SSE,
        query=query,
    )
    parameter: dict[str, Any] = {"description": f"A channel of the {beat.name} beat."}
    if beat.channels:
        parameter["enum"] = list(beat.channels)
    document.channel(
        f"{server}-streams-{beat.name}-channel",
        address=f"/streams/{beat.name}/{{channel}}",
        server=server,
        messages=[*events, gap],
        description=f"One channel of the {beat.name} beat, through the gateway. " + _SSE,
        query=query,
        parameters={"channel": parameter},
    )
    return events


def add_gateway(
    document: Document, beats: Sequence[Publisher], *, http: str, server: str = "gateway"
) -> None:
    """The gateway's server and streams over ``beats`` (their ``channels``: those known)."""
    document.server(server, host=http, protocol="http", description="The gateway (SSE).")
    merged = [document.gap_message()]
    for beat in beats:
        merged += _gateway_beat(document, beat, server)
    document.channel(
        f"{server}-streams",
        address="/streams",
        server=server,
        messages=merged,
        description="Every beat the token may read, merged; id: the position vector "
        "label=seq;label=seq. " + _SSE,
        query=_gateway_query(),
    )


def gateway_document(beats: Sequence[Publisher], *, http: str) -> dict[str, Any]:
    """The AsyncAPI document the gateway serves as ``/asyncapi.json``."""
    document = Document("Works Beats gateway", "One authenticated front door to every beat.")
    add_gateway(document, beats, http=http)
    return document.doc
