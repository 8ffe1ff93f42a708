from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from common.logs import configure_logging, redact_url
from tests.processes import ServiceProcess
from tests.support import free_port


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("mqtts://bob:s3cret@host:8883/x") == "mqtts://bob:***@host:8883/x"
    assert redact_url("mqtt://host:1883") == "mqtt://host:1883"


def test_json_logs_are_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", json_format=True)
    try:
        logging.getLogger("beats.test").warning("hello %s", "world")
        try:
            raise ValueError("broken")
        except ValueError:
            logging.getLogger("beats.test").exception("with its traceback")
    finally:
        configure_logging("warning")
    lines = capsys.readouterr().err.strip().splitlines()
    entry, failure = json.loads(lines[-2]), json.loads(lines[-1])
    assert entry["message"] == "hello world"
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "beats.test"
    assert entry["time"].endswith("+00:00")
    assert "Traceback" in failure["exception"] and "ValueError: broken" in failure["exception"]


def _json_lines(text: str) -> list[dict[str, str]]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert line.startswith("{"), f"not JSON: {line!r}"
    return [json.loads(line) for line in lines]


def test_log_json_makes_uvicorns_lines_json_too(tmp_path: Path) -> None:
    """A running beat with --log-json, sent a request uvicorn itself refuses (it logs "Invalid
    HTTP request received." on its own logger), then stopped: every line on stderr is JSON."""
    beat = ServiceProcess(
        ["run", "hivemq", "--mqtt-url", f"mqtt://127.0.0.1:{free_port()}", "--log-json",
         "--data-dir", str(tmp_path / "data")],
        port=free_port(), log=tmp_path / "beat.log",
    )  # fmt: skip
    beat.start(ready=False)
    try:
        with socket.create_connection(("127.0.0.1", beat.port)) as sock:
            sock.sendall(b"GARBAGE \x00\x01 HTTP/9\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 400")
        assert beat.terminate() == 0
    finally:
        beat.stop()
    entries = _json_lines(beat.output())
    assert any(e["logger"] == "uvicorn.error" for e in entries), entries
    assert any(e["logger"] == "beats.hivemq.source" for e in entries)


def test_log_json_makes_an_uncaught_traceback_one_json_line() -> None:
    code = (
        "from common.logs import configure_logging\n"
        "configure_logging('info', json_format=True)\n"
        "raise RuntimeError('out of the blue')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    (entry,) = _json_lines(done.stderr)
    assert entry["level"] == "CRITICAL"
    assert "RuntimeError: out of the blue" in entry["exception"]
