"""The MQTT source: a persistent session, acknowledgements only after commit.

Ack timing: paho (under aiomqtt 2.x) normally acknowledges a QoS 1 message as soon as it is
read from the socket, before the application has it. The source switches paho to manual
acknowledgement and sends PUBACK from the commit future's done-callback, so a message the beat
never committed is never acknowledged: after a crash the broker delivers it again (persistent
session: stable client id, clean start off, session expiry). Acks go out in receive order, as
MQTT requires, because commits complete in submit order.

QoS 2: paho answers PUBREC before handing the message over, so for QoS 2 only PUBCOMP waits
for the commit. The default subscription QoS is 1, which makes the broker downgrade QoS 2
publications to QoS 1 for this subscriber: at-least-once end to end.

Bounds and overflow: between the MQTT client and the log sit at most ``mqtt_queue_size``
messages; when that many wait, the client stops reading the socket until half of them are
committed (:mod:`beats.hivemq.flow`), so the broker keeps the rest: backpressure, nothing is
dropped here (``beats_source_queue_depth``, ``beats_source_paused``). The queue is bounded in
bytes as well (``mqtt_queue_bytes``), and so are the commits in flight (1,000 batches of up to
500 messages, and ``mqtt_queue_bytes`` of payload: :class:`common.inflight.InFlight`). The
MQTT 5 Receive Maximum is also sent, for brokers that honour it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from datetime import UTC, datetime
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from beats.hivemq.flow import FlowControlledClient
from beats.hivemq.normalize import MqttMessage, channel_for, normalize, properties_from_paho
from beats.hivemq.settings import HivemqSettings
from common.envelope import CloudEvent
from common.eventlog import StoredEvent
from common.inflight import InFlight
from common.logs import redact_url
from common.pipeline import Pipeline
from common.supervise import Backoff, raise_if_cancelled

__all__ = ["MqttSource"]

_log = logging.getLogger(__name__)
_MAX_PENDING_COMMITS = 1_000
_BATCH = 500

_Commit = asyncio.Future[list[StoredEvent | None]]


class MqttSource:
    def __init__(self, settings: HivemqSettings) -> None:
        self.settings = settings
        broker = settings.broker()
        scheme = "mqtts" if broker["tls"] else "mqtt"
        self.uri = f"{scheme}://{broker['hostname']}:{broker['port']}"
        self._channels = settings.channel_map()
        self._lost = asyncio.Event()

    async def run(self, pipeline: Pipeline) -> None:
        backoff = Backoff(min_delay=0.5, max_delay=30.0)
        pipeline.set_ready("mqtt", False, "connecting")
        while True:
            try:
                await self._session(pipeline, backoff)
            except aiomqtt.MqttError as exc:
                pipeline.metrics.source_connected.set(0)
                pipeline.metrics.reconnects.inc()
                why = self._why(exc)
                pipeline.set_ready("mqtt", False, f"disconnected: {why}")
                delay = backoff.next()
                _log.warning("mqtt %s: %s; reconnecting in %.1fs", self.uri, why, delay)
                await asyncio.sleep(delay)

    @staticmethod
    def _why(exc: aiomqtt.MqttError) -> str:
        """The error, with the reason paho gave for the disconnection when there is one."""
        cause = exc.__cause__
        return f"{exc} ({cause})" if cause is not None else str(exc)

    async def _session(self, pipeline: Pipeline, backoff: Backoff) -> None:
        client = self._client()
        client._client.manual_ack_set(True)  # manual acks: see the module docstring
        self._lost = asyncio.Event()
        pending = InFlight(
            max_commits=_MAX_PENDING_COMMITS, max_bytes=self.settings.mqtt_queue_bytes
        )
        async with client:
            qos = self.settings.mqtt_qos
            filters: list[tuple[str, int]] = [(topic, qos) for topic in self.settings.mqtt_topic]
            await client.subscribe(filters)
            raise_if_cancelled()  # aiomqtt's connect and subscribe wait with asyncio.wait_for
            backoff.reset()
            pipeline.metrics.source_connected.set(1)
            pipeline.set_ready("mqtt", True, f"subscribed on {redact_url(self.uri)}")
            _log.info("mqtt: subscribed to %s on %s", self.settings.mqtt_topic, self.uri)
            async for first in client.messages:
                batch = [first, *client.drain(_BATCH - 1)]
                client.resume_if_drained()
                pipeline.metrics.source_queue.set(len(client.messages))
                pipeline.metrics.source_paused.set(client.pauses)
                size = sum(
                    len(m.payload) for m in batch if isinstance(m.payload, bytes | bytearray)
                )
                await pending.add(self._handle(client, batch, pipeline), size)
                if self._lost.is_set():
                    raise aiomqtt.MqttError("reconnecting so the broker redelivers")

    def _handle(
        self, client: FlowControlledClient, batch: list[aiomqtt.Message], pipeline: Pipeline
    ) -> _Commit:
        """Normalise a batch, commit it as one, and acknowledge it (in order) once committed."""
        pipeline.received(len(batch))
        events = [self._normalize(message, pipeline) for message in batch]
        future = pipeline.submit(events)
        acks = [(m.mid, m.qos) for m in batch if m.qos > 0]
        if acks:
            future.add_done_callback(lambda f: self._ack(client, f, acks))
        return future

    def _normalize(self, message: aiomqtt.Message, pipeline: Pipeline) -> CloudEvent:
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            payload = str(payload).encode()
        raw = MqttMessage(
            topic=message.topic.value,
            payload=bytes(payload),
            qos=message.qos,
            retain=message.retain,
            received_at=datetime.now(UTC),
            properties=properties_from_paho(message.properties),
        )
        (event,) = pipeline.guarded(
            lambda: normalize(
                raw,
                source=self.uri,
                channel=channel_for(raw.topic, self._channels),
                max_payload=self.settings.max_payload_bytes,
            ),
            raw=raw.payload,
            source=self.uri,
            context={"topic": raw.topic, "qos": raw.qos, "retain": raw.retain},
        )
        return event

    def _ack(
        self, client: FlowControlledClient, future: _Commit, acks: list[tuple[int, int]]
    ) -> None:
        if future.cancelled() or future.exception() is not None:
            self._lost.set()
            return
        for mid, qos in acks:
            client._client.ack(mid, qos)

    def _client(self) -> FlowControlledClient:
        s = self.settings
        broker = s.broker()
        v5 = s.mqtt_version == "5"
        options: dict[str, Any] = {
            "hostname": broker["hostname"],
            "port": broker["port"],
            "username": broker["username"],
            "password": broker["password"],
            "identifier": s.mqtt_client_id,
            "keepalive": s.mqtt_keepalive,
            "protocol": aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            "timeout": 10,
        }
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = s.mqtt_session_expiry
            properties.ReceiveMaximum = s.mqtt_receive_maximum
            options["properties"] = properties
            options["clean_start"] = s.mqtt_clean_start
        else:
            options["clean_session"] = s.mqtt_clean_start
        if broker["tls"]:
            cafile = str(s.mqtt_ca_file) if s.mqtt_ca_file else None
            options["tls_context"] = ssl.create_default_context(cafile=cafile)
        queue = s.mqtt_queue_size
        return FlowControlledClient(
            **options, high=queue, low=queue // 2, high_bytes=s.mqtt_queue_bytes
        )
