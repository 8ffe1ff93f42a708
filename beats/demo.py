"""``beats demo``: the embedded all-in-one default, no Docker and no external service.

Starts in one process: an embedded MQTT broker with the municipality sensor simulator and the
HiveMQ beat; the OpenCTI live-stream emulator (generating indicators, malware, observables,
relationships and reports) with the OpenCTI beat; the Ditto emulator (connected cars) with the
Ditto beat; the Orion emulator (rooms and parking spots) with the FIWARE beat; and the gateway
(port 8080) in front of the four beats, with its live dashboard. Then prints what to open. Kafka
publishing is on when ``--kafka-bootstrap`` is given. Ctrl-C stops everything gracefully.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from pydantic import Field

from beats.ditto.emulator import EmulatorSettings as DittoEmulatorSettings
from beats.ditto.emulator import main as emulate_ditto
from beats.ditto.service import build as build_ditto
from beats.ditto.settings import DittoSettings
from beats.fiware.emulator import EmulatorSettings as OrionEmulatorSettings
from beats.fiware.emulator import main as emulate_orion
from beats.fiware.service import build as build_fiware
from beats.fiware.settings import FiwareSettings
from beats.hivemq.emulator import embedded_broker
from beats.hivemq.service import build as build_hivemq
from beats.hivemq.settings import HivemqSettings
from beats.hivemq.simulator import SimulatorSettings
from beats.hivemq.simulator import main as simulate
from beats.opencti.emulator import EmulatorSettings as OpenctiEmulatorSettings
from beats.opencti.emulator import main as emulate_opencti
from beats.opencti.service import build as build_opencti
from beats.opencti.settings import OpenctiSettings
from common.service import Beat
from common.settings import CommandSettings
from gateway.service import Gateway
from gateway.settings import GatewaySettings

__all__ = ["DemoSettings", "main"]

_log = logging.getLogger(__name__)


class DemoSettings(CommandSettings):
    """Everything on one machine: embedded broker, sensor simulator, beats."""

    host: str = Field("127.0.0.1", description="Interface the services listen on.")
    gateway_port: int = Field(8080, description="HTTP port of the gateway and its dashboard.")
    data_dir: Path = Field(Path("data/demo"), description="Event logs of the demo's beats.")
    kafka_bootstrap: str | None = Field(None, description="Kafka bootstrap (unset: Kafka off).")
    kafka_idempotence: bool = Field(True, description="Idempotent producer.")
    mqtt_port: int = Field(1884, description="Port of the embedded MQTT broker.")
    hivemq_port: int = Field(8101, description="HTTP port of the HiveMQ beat.")
    opencti_port: int = Field(8103, description="HTTP port of the OpenCTI beat.")
    opencti_emulator_port: int = Field(4000, description="Port of the OpenCTI emulator.")
    threat_rate: float = Field(2.0, description="OpenCTI events per second from the emulator.")
    threat_retention: int = Field(
        10_000, ge=1, description="Stream entries the OpenCTI emulator keeps (redis:trimming)."
    )
    ditto_port: int = Field(8104, description="HTTP port of the Ditto beat.")
    ditto_emulator_port: int = Field(8090, description="Port of the Ditto emulator.")
    car_interval: float = Field(0.5, description="Seconds between connected-car changes.")
    fiware_port: int = Field(8102, description="HTTP port of the FIWARE beat.")
    orion_emulator_port: int = Field(1026, description="Port of the Orion emulator.")
    city_interval: float = Field(0.5, description="Seconds between room/parking changes.")
    stations: int = Field(5, description="Simulated sensor stations.")
    rate: float = Field(1.0, description="Readings per second per station.")
    outlier_rate: float = Field(0.02, description="Probability of an outlier reading.")
    ring_size: int = Field(
        10_000, ge=0, description="Recent events the gateway keeps per stream for replays."
    )
    log_level: str = Field("info", description="Log level.")


def _banner(settings: DemoSettings) -> str:
    gateway = f"http://{settings.host}:{settings.gateway_port}"
    sensors = f"http://{settings.host}:{settings.hivemq_port}"
    threats = f"http://{settings.host}:{settings.opencti_port}"
    twins = f"http://{settings.host}:{settings.ditto_port}"
    city = f"http://{settings.host}:{settings.fiware_port}"
    kafka = settings.kafka_bootstrap or "off (pass --kafka-bootstrap HOST:PORT)"
    return "\n".join(
        [
            "",
            "Works Beats demo is running. Open or paste:",
            f"  {gateway}/                                    # live dashboard",
            f"  curl -N {gateway}/streams                     # every beat through the gateway",
            f"  curl -N '{gateway}/streams/hivemq?prefix.subject=city/sensors/station-00'",
            "Each beat directly:",
            f"  curl -N {sensors}/events                      # live sensor readings (SSE)",
            f"  curl -N '{sensors}/events?last_event_id=0'    # everything kept, then live",
            f"  curl -N {threats}/events/indicators           # threat intel: indicators",
            f"  curl -N '{threats}/events?last_event_id=0'    # the whole OpenCTI feed",
            f"  curl -N {twins}/events/twin                  # Ditto: connected cars",
            f"  curl -N {city}/events/entities               # FIWARE: rooms, parking spots",
            f"  curl {sensors}/readyz                         # readiness (any beat)",
            f"  {sensors}/docs                                # OpenAPI",
            f"Kafka: {kafka}",
            "Ctrl-C stops everything.",
            "",
        ]
    )


async def main(settings: DemoSettings, shutdown: asyncio.Event) -> None:
    async with embedded_broker(host=settings.host, port=settings.mqtt_port) as mqtt_url:
        hivemq = build_hivemq(
            HivemqSettings(
                host=settings.host,
                port=settings.hivemq_port,
                data_dir=settings.data_dir / "hivemq",
                mqtt_url=mqtt_url,
                mqtt_version="3.1.1",
                mqtt_topic=["city/#"],
                mqtt_client_id="works-beats-demo",
                **_kafka(settings),
            )
        )
        simulator = SimulatorSettings(
            mqtt_url=mqtt_url,
            stations=settings.stations,
            rate=settings.rate,
            outlier_rate=settings.outlier_rate,
        )
        opencti, ditto, fiware = _opencti(settings), _ditto(settings), _fiware(settings)
        gateway = _gateway(settings)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(hivemq.serve(shutdown), name="demo:hivemq")
            tasks.create_task(
                emulate_opencti(_opencti_emulator(settings), shutdown), name="demo:opencti-emulator"
            )
            tasks.create_task(opencti.serve(shutdown), name="demo:opencti")
            tasks.create_task(
                emulate_ditto(_ditto_emulator(settings), shutdown), name="demo:ditto-emulator"
            )
            tasks.create_task(ditto.serve(shutdown), name="demo:ditto")
            tasks.create_task(
                emulate_orion(_orion_emulator(settings), shutdown), name="demo:orion-emulator"
            )
            tasks.create_task(fiware.serve(shutdown), name="demo:fiware")
            await _until_ready(hivemq, shutdown)
            tasks.create_task(simulate(simulator, shutdown), name="demo:simulator")
            await _until_ready(opencti, shutdown)
            await _until_ready(ditto, shutdown)
            await _until_ready(fiware, shutdown)
            tasks.create_task(gateway.serve(shutdown), name="demo:gateway")
            print(_banner(settings), flush=True)


def _kafka(settings: DemoSettings) -> dict[str, Any]:
    return {
        "kafka_bootstrap": settings.kafka_bootstrap,
        "kafka_idempotence": settings.kafka_idempotence,
    }


_DEMO_TOKEN = "demo-opencti-token"


def _gateway(settings: DemoSettings) -> Gateway:
    ports = {
        "hivemq": settings.hivemq_port,
        "fiware": settings.fiware_port,
        "opencti": settings.opencti_port,
        "ditto": settings.ditto_port,
    }
    beats = [f"{name}=http://{settings.host}:{port}" for name, port in ports.items()]
    return Gateway(
        GatewaySettings(
            host=settings.host, port=settings.gateway_port, beat=beats, ring_size=settings.ring_size
        )
    )


def _orion_emulator(settings: DemoSettings) -> OrionEmulatorSettings:
    return OrionEmulatorSettings(
        host=settings.host,
        port=settings.orion_emulator_port,
        scenario=True,
        scenario_interval=settings.city_interval,
        ld_mode="default",  # Orion-LD as it ships (no -experimental)
    )


def _fiware(settings: DemoSettings) -> Beat:
    base = f"http://{settings.host}:{settings.fiware_port}"
    return build_fiware(
        FiwareSettings(
            host=settings.host,
            port=settings.fiware_port,
            data_dir=settings.data_dir / "fiware",
            orion_url=f"http://{settings.host}:{settings.orion_emulator_port}",
            notify_url=f"{base}/notify",
            subscription_check_interval=5.0,
            **_kafka(settings),
        )
    )


def _ditto_emulator(settings: DemoSettings) -> DittoEmulatorSettings:
    return DittoEmulatorSettings(
        host=settings.host,
        port=settings.ditto_emulator_port,
        scenario=True,
        scenario_interval=settings.car_interval,
    )


def _ditto(settings: DemoSettings) -> Beat:
    return build_ditto(
        DittoSettings(
            host=settings.host,
            port=settings.ditto_port,
            data_dir=settings.data_dir / "ditto",
            ditto_url=f"http://{settings.host}:{settings.ditto_emulator_port}",
            ditto_username="ditto",
            ditto_password="ditto",
            namespaces=["org.works.cars"],
            **_kafka(settings),
        )
    )


def _opencti_emulator(settings: DemoSettings) -> OpenctiEmulatorSettings:
    return OpenctiEmulatorSettings(
        host=settings.host,
        port=settings.opencti_emulator_port,
        token=_DEMO_TOKEN,
        scenario_rate=settings.threat_rate,
        trimming=settings.threat_retention,
    )


def _opencti(settings: DemoSettings) -> Beat:
    return build_opencti(
        OpenctiSettings(
            host=settings.host,
            port=settings.opencti_port,
            data_dir=settings.data_dir / "opencti",
            opencti_url=f"http://{settings.host}:{settings.opencti_emulator_port}",
            opencti_token=_DEMO_TOKEN,
            opencti_start="0",
            **_kafka(settings),
        )
    )


async def _until_ready(beat: Beat, shutdown: asyncio.Event, timeout: float = 30.0) -> None:
    """Wait until the beat is subscribed, so the simulator's first readings are not missed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not beat.readiness.ready and not shutdown.is_set():
        if loop.time() > deadline:
            _log.warning("%s beat not ready after %.0fs; starting anyway", beat.name, timeout)
            return
        await asyncio.sleep(0.05)
