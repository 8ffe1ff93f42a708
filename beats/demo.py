"""``beats demo``: the embedded all-in-one default, no Docker and no external service.

Starts in one process: an embedded MQTT broker with the municipality sensor simulator and the
HiveMQ beat; the OpenCTI live-stream emulator (generating indicators, malware, observables,
relationships and reports) with the OpenCTI beat; the Ditto emulator (connected cars) with the
Ditto beat; the Orion emulator (rooms and parking spots) with the FIWARE beat; and the gateway
(port 8080) in front of the four beats, with its live dashboard. Then prints what to open. Kafka
publishing is on when ``--kafka-bootstrap`` is given. Ctrl-C stops everything gracefully.

Every port is bound before anything starts: one that cannot be had stops the demo with one line
naming it and its option, before a broker, an emulator or a beat ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from pydantic import Field

from beats.ditto.emulator import EmulatorSettings as DittoEmulatorSettings
from beats.ditto.emulator import serve as serve_ditto_emulator
from beats.ditto.service import build as build_ditto
from beats.ditto.settings import DittoSettings
from beats.fiware.emulator import EmulatorSettings as OrionEmulatorSettings
from beats.fiware.emulator import serve as serve_orion_emulator
from beats.fiware.service import build as build_fiware
from beats.fiware.settings import FiwareSettings
from beats.hivemq.emulator import embedded_broker
from beats.hivemq.service import build as build_hivemq
from beats.hivemq.settings import HivemqSettings
from beats.hivemq.simulator import SimulatorSettings
from beats.hivemq.simulator import main as simulate
from beats.opencti.emulator import EmulatorSettings as OpenctiEmulatorSettings
from beats.opencti.emulator import serve as serve_opencti_emulator
from beats.opencti.service import build as build_opencti
from beats.opencti.settings import OpenctiSettings
from common.lifecycle import listen, run_until
from common.service import Beat
from common.settings import CommandSettings, LogLevel
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
    shutdown_timeout: float = Field(
        10.0, description="Seconds each service's graceful shutdown may take (they stop together)."
    )
    log_level: LogLevel = Field("info", description="Log level.")


_LISTENERS = [  # (port option, who listens on it), in the order they are bound
    ("mqtt_port", "MQTT broker"),
    ("opencti_emulator_port", "opencti emulator"),
    ("ditto_emulator_port", "ditto emulator"),
    ("orion_emulator_port", "orion emulator"),
    ("hivemq_port", "hivemq beat"),
    ("opencti_port", "opencti beat"),
    ("ditto_port", "ditto beat"),
    ("fiware_port", "fiware beat"),
    ("gateway_port", "gateway"),
]


def _listen_all(settings: DemoSettings, stack: contextlib.ExitStack) -> dict[str, socket.socket]:
    """Every listening socket of the demo (closed with ``stack``), or :class:`CannotListen`."""
    sockets: dict[str, socket.socket] = {}
    for field, who in _LISTENERS:
        option = "--" + field.replace("_", "-")
        sock = listen(settings.host, getattr(settings, field), who=who, option=option)
        sockets[field] = stack.enter_context(contextlib.closing(sock))
    return sockets


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
    with contextlib.ExitStack() as stack:
        sockets = _listen_all(settings, stack)  # CannotListen before anything started
        await _run(settings, shutdown, sockets)


async def _run(
    settings: DemoSettings, shutdown: asyncio.Event, sockets: dict[str, socket.socket]
) -> None:
    host = settings.host
    async with embedded_broker(
        host=host, port=settings.mqtt_port, sock=sockets["mqtt_port"]
    ) as url:
        hivemq = _hivemq(settings, url)
        opencti, ditto, fiware = _opencti(settings), _ditto(settings), _fiware(settings)
        async with asyncio.TaskGroup() as tasks:
            _start_emulators(settings, shutdown, sockets, tasks)
            for beat in (hivemq, opencti, ditto, fiware):
                sock = sockets[f"{beat.name}_port"]
                tasks.create_task(beat.serve(shutdown, sock=sock), name=f"demo:{beat.name}")
            await _until_ready(hivemq, shutdown)
            tasks.create_task(simulate(_simulator(settings, url), shutdown), name="demo:simulator")
            for beat in (opencti, ditto, fiware):
                await _until_ready(beat, shutdown)
            gateway = _gateway(settings).serve(shutdown, sock=sockets["gateway_port"])
            tasks.create_task(gateway, name="demo:gateway")
            print(_banner(settings), flush=True)


def _start_emulators(
    settings: DemoSettings,
    shutdown: asyncio.Event,
    sockets: dict[str, socket.socket],
    tasks: asyncio.TaskGroup,
) -> None:
    emulators: list[tuple[str, Callable[..., Coroutine[Any, Any, None]], CommandSettings]] = [
        ("opencti", serve_opencti_emulator, _opencti_emulator(settings)),
        ("ditto", serve_ditto_emulator, _ditto_emulator(settings)),
        ("orion", serve_orion_emulator, _orion_emulator(settings)),
    ]
    for name, serve, options in emulators:
        sock = sockets[f"{name}_emulator_port"]
        work = serve(sock=sock, **options.model_dump(exclude={"log_level"}))
        label = f"demo:{name}-emulator"
        tasks.create_task(run_until(shutdown, work, name=label), name=label)


def _hivemq(settings: DemoSettings, mqtt_url: str) -> Beat:
    return build_hivemq(
        HivemqSettings(
            host=settings.host,
            port=settings.hivemq_port,
            data_dir=settings.data_dir / "hivemq",
            mqtt_url=mqtt_url,
            mqtt_version="3.1.1",
            mqtt_topic=["city/#"],
            mqtt_client_id="works-beats-demo",
            **_common(settings),
        )
    )


def _simulator(settings: DemoSettings, mqtt_url: str) -> SimulatorSettings:
    return SimulatorSettings(
        mqtt_url=mqtt_url,
        stations=settings.stations,
        rate=settings.rate,
        outlier_rate=settings.outlier_rate,
    )


def _common(settings: DemoSettings) -> dict[str, Any]:
    return {
        "kafka_bootstrap": settings.kafka_bootstrap,
        "kafka_idempotence": settings.kafka_idempotence,
        "shutdown_timeout": settings.shutdown_timeout,
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
            writeback_open=True,  # the demo is open everywhere (the gateway has no tokens)
            **_common(settings),
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
            **_common(settings),
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
            **_common(settings),
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
