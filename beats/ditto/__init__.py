"""The Ditto beat: digital-twin events and live messages republished as CloudEvents."""

from beats.ditto.service import build
from beats.ditto.settings import DittoSettings

__all__ = ["DittoSettings", "build"]
