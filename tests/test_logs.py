from __future__ import annotations

import json
import logging

import pytest

from common.logs import configure_logging, redact_url


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("mqtts://bob:s3cret@host:8883/x") == "mqtts://bob:***@host:8883/x"
    assert redact_url("mqtt://host:1883") == "mqtt://host:1883"


def test_json_logs_are_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", json_format=True)
    try:
        logging.getLogger("beats.test").warning("hello %s", "world")
    finally:
        configure_logging("warning")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    entry = json.loads(line)
    assert entry["message"] == "hello world"
    assert entry["level"] == "warning"
    assert entry["logger"] == "beats.test"
