"""The FIWARE beat: Orion (NGSI v2) and NGSI-LD entity changes republished as CloudEvents."""

from beats.fiware.service import build
from beats.fiware.settings import FiwareSettings

__all__ = ["FiwareSettings", "build"]
