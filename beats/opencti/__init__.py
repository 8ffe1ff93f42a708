"""The OpenCTI beat: the live threat-intelligence stream republished as CloudEvents."""

from beats.opencti.service import build
from beats.opencti.settings import OpenctiSettings

__all__ = ["OpenctiSettings", "build"]
