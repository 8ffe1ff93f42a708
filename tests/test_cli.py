"""The ``beats`` command line: options from flags and ``BEATS_*`` variables, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic_settings import CliApp

from beats.hivemq.settings import HivemqSettings

ROOT = Path(__file__).parent.parent


def beats(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beats", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


def test_run_help_lists_every_contract_option() -> None:
    result = beats("run", "hivemq", "--help")
    assert result.returncode == 0
    for option in (
        "--host",
        "--port",
        "--data-dir",
        "--kafka-bootstrap",
        "--kafka-topic-prefix",
        "--log-level",
        "--mqtt-url",
        "--mqtt-topic",
        "--mqtt-version",
        "--mqtt-client-id",
    ):
        assert option in result.stdout, option


def test_unknown_service_and_bad_option_fail_clearly() -> None:
    unknown = beats("run", "nosuch")
    assert unknown.returncode == 2
    assert "invalid choice" in unknown.stderr
    bad = beats("run", "hivemq", "--mqtt-version", "4")
    assert bad.returncode == 2
    assert "mqtt" in bad.stderr.lower()


def test_options_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEATS_MQTT_TOPIC", "a/#,b/+")
    monkeypatch.setenv("BEATS_KAFKA_BOOTSTRAP", "k1:9092")
    monkeypatch.setenv("BEATS_PORT", "9999")
    settings = CliApp.run(
        HivemqSettings, cli_args=["--port", "8111", "--mqtt-channel", "a/#=alpha"]
    )
    assert settings.mqtt_topic == ["a/#", "b/+"]
    assert settings.kafka_bootstrap == "k1:9092"
    assert settings.port == 8111  # the command line wins over the environment
    assert settings.channel_map() == [("a/#", "alpha")]


def test_repeated_topic_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = CliApp.run(
        HivemqSettings, cli_args=["--mqtt-topic", "x", "--mqtt-topic", "$share/g/y"]
    )
    assert settings.mqtt_topic == ["x", "$share/g/y"]


def test_credentials_from_url_or_options_never_in_repr() -> None:
    settings = HivemqSettings(mqtt_url="mqtts://alice:pw%21@broker", mqtt_password="other")
    broker = settings.broker()
    assert broker == {
        "hostname": "broker",
        "port": 8883,
        "tls": True,
        "username": "alice",
        "password": "other",
    }
    assert "other" not in repr(settings)
    with pytest.raises(ValueError, match="mqtt://"):
        HivemqSettings(mqtt_url="http://x")
