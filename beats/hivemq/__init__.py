"""The HiveMQ beat: MQTT 3.1.1 and 5 messages republished as CloudEvents over SSE and Kafka."""

from beats.hivemq.service import build
from beats.hivemq.settings import HivemqSettings

__all__ = ["HivemqSettings", "build"]
