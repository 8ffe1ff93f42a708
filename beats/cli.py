"""The ``beats`` command: run a service, the demo, an emulator or the sensor simulator.

Every service's options come from its settings class (``--help`` lists them); each option is
also a ``BEATS_*`` environment variable. This module knows every service; ``common`` knows none.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic_settings import BaseSettings

from common.cliargs import parse_settings
from common.lifecycle import Stopper, fatal_in
from common.logs import configure_logging

__all__ = ["main"]

_log = logging.getLogger("beats")

DEMO_EXTRA = frozenset({"amqtt", "stix2", "graphql"})
"""What the emulators and simulators import beyond the runtime (``works-beats[demo]``)."""

WATCHDOG_MARGIN = 5.0
"""Seconds the watchdog adds to ``--shutdown-timeout`` (10 s for commands without it)."""


@dataclass(frozen=True)
class Command:
    """A runnable thing: its settings class and its ``async main(settings, shutdown)``."""

    module: str
    settings: str
    summary: str
    entry: str = "main"

    def load(self) -> tuple[type[BaseSettings], Callable[..., Awaitable[None]]]:
        try:
            module = importlib.import_module(self.module)
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] not in DEMO_EXTRA:
                raise
            raise SystemExit(
                f"{self.module} needs {exc.name!r}, which comes with the demo extra: "
                "pip install 'works-beats[demo]'"
            ) from None
        return getattr(module, self.settings), getattr(module, self.entry)


RUN = {
    "hivemq": Command("beats.hivemq.service", "HivemqSettings", "MQTT broker → SSE and Kafka"),
    "opencti": Command("beats.opencti.service", "OpenctiSettings", "OpenCTI stream → SSE, Kafka"),
    "ditto": Command("beats.ditto.service", "DittoSettings", "Eclipse Ditto → SSE and Kafka"),
    "fiware": Command("beats.fiware.service", "FiwareSettings", "Orion / NGSI-LD → SSE, Kafka"),
    "gateway": Command("gateway.service", "GatewaySettings", "auth, fan-out, replay, dashboard"),
}
EMULATE = {
    "mqtt": Command("beats.hivemq.emulator", "BrokerSettings", "embedded MQTT 3.1.1 broker"),
    "opencti": Command("beats.opencti.emulator", "EmulatorSettings", "OpenCTI live stream"),
    "ditto": Command("beats.ditto.emulator", "EmulatorSettings", "Eclipse Ditto (WebSocket, HTTP)"),
    "orion": Command("beats.fiware.emulator", "EmulatorSettings", "Orion NGSI v2 and NGSI-LD"),
}
SIMULATE = {
    "sensors": Command(
        "beats.hivemq.simulator", "SimulatorSettings", "municipality sensors → MQTT"
    ),
    "city": Command("beats.fiware.simulator", "CitySettings", "rooms, parking spots → Orion"),
}
LOG = {
    action: Command("common.logtool", "LogToolSettings", summary, f"main_{action}")
    for action, summary in (
        ("info", "what a beat's event log holds"),
        ("check", "check a beat's event log"),
        ("repair", "copy what is readable of a damaged log"),
    )
}
DEMO = Command("beats.demo", "DemoSettings", "everything on one machine")
TAIL = Command("common.client", "TailSettings", "print a live feed: beats tail URL")


GROUPS = {
    "run": (RUN, "run a beat or the gateway", "beats and the gateway"),
    "emulate": (EMULATE, "run an emulator of a source (the demo's)", "emulators"),
    "simulate": (SIMULATE, "feed a source with simulated data", "simulators"),
    "log": (LOG, "inspect or repair a beat's event log", "event log tools"),
}
SINGLE = {"demo": DEMO, "tail": TAIL}


def _version() -> str:
    try:
        return version("works-beats")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _listing(table: dict[str, Command]) -> str:
    width = max(len(key) for key in table) + 2
    return "\n".join(f"  {key:<{width}}{cmd.summary}" for key, cmd in table.items())


def _epilog() -> str:
    sections = [
        f"{title} (beats {name} NAME):\n{_listing(table)}"
        for name, (table, _, title) in GROUPS.items()
    ]
    sections.append("Options of each command: beats <command> [NAME] --help.")
    return "\n\n".join(sections)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beats",
        description="Works Beats: IoT and threat-intelligence sources as CloudEvents over SSE "
        "and Kafka.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    for name, (table, summary, _) in GROUPS.items():
        group = sub.add_parser(
            name,
            help=f"{summary}: beats {name} NAME",
            description=f"{summary.capitalize()}. Options of each: beats {name} NAME --help.",
            epilog=f"NAME one of:\n{_listing(table)}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        group.add_argument("name", metavar="NAME", choices=list(table), help=", ".join(table))
    for name, cmd in SINGLE.items():
        sub.add_parser(name, help=f"{cmd.summary} (options: beats {name} --help)", add_help=False)
    return parser


def _split(argv: Sequence[str]) -> tuple[Command, str, list[str]]:
    """The command ``argv`` names, its program name and the arguments left for its options."""
    command = argv[0] if argv else ""
    if command in SINGLE:
        return SINGLE[command], f"beats {command}", list(argv[1:])
    table = GROUPS[command][0] if command in GROUPS else {}
    if len(argv) < 2 or argv[1] not in table:
        _parser().parse_args(list(argv[:2]))  # help, version or a usage error: it exits
        raise SystemExit(2)
    return table[argv[1]], f"beats {command} {argv[1]}", list(argv[2:])


def main(argv: Sequence[str] | None = None) -> None:
    command, prog, rest = _split(sys.argv[1:] if argv is None else argv)
    settings_class, entry = command.load()
    settings = parse_settings(settings_class, rest, prog=prog)
    configure_logging(getattr(settings, "log_level", "info"), json_format=_json_logs(settings))
    grace = float(getattr(settings, "shutdown_timeout", 10.0)) + WATCHDOG_MARGIN
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(_run(entry, settings, grace))
    except Exception as exc:
        fatal = fatal_in(exc)
        if fatal is None:
            raise
        _log.error("%s", fatal)
        raise SystemExit(fatal.exit_code) from None


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (the default on Linux and macOS: its socket
    writes and callbacks cost less than asyncio's, see bench/README.md), else asyncio's;
    ``BEATS_EVENT_LOOP=asyncio`` chooses asyncio's."""
    if os.environ.get("BEATS_EVENT_LOOP", "uvloop") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _json_logs(settings: Any) -> bool:
    return bool(getattr(settings, "log_json", False))


async def _run(entry: Callable[..., Awaitable[None]], settings: BaseSettings, grace: float) -> None:
    """Run the command until it ends or a signal stops it (:class:`~common.lifecycle.Stopper`:
    a second signal, or a shutdown overrunning ``grace`` seconds, ends the process)."""
    loop = asyncio.get_running_loop()
    shutdown = asyncio.Event()

    def stopping(signal_name: str) -> None:
        _log.info("%s received: stopping (a second signal exits at once)", signal_name)
        shutdown.set()

    def request_stop(signal_name: str) -> None:
        loop.call_soon_threadsafe(stopping, signal_name)

    stopper = Stopper(request_stop, grace=grace)
    stopper.install()
    try:
        await entry(settings, shutdown)
    finally:
        stopper.arm("the command ended")  # what asyncio and the interpreter do next is bounded
