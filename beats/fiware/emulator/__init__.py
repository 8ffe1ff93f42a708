"""The Orion (NGSI v2) and NGSI-LD broker emulator: ``beats emulate orion``."""

from beats.fiware.emulator.app import EmulatorSettings, create_app, main, serve
from beats.fiware.emulator.broker import Broker

__all__ = ["Broker", "EmulatorSettings", "create_app", "main", "serve"]
