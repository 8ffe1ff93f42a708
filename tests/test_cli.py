"""The ``beats`` command line: options from flags and ``BEATS_*`` variables, clear errors."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import CliApp

from beats.cli import DEMO, EMULATE, LOG, RUN, SIMULATE, TAIL, Command, event_loop_factory
from beats.hivemq.settings import HivemqSettings
from tests.support import eventually, free_port, serve_app

ROOT = Path(__file__).parent.parent
GROUPS: dict[str, dict[str, Command]] = {
    "run": RUN,
    "emulate": EMULATE,
    "simulate": SIMULATE,
    "log": LOG,
}
COMMANDS = [f"{group} {name}" for group, table in GROUPS.items() for name in table]
COMMANDS += ["demo", "tail"]
PYDANTIC_INTERNALS = ("input_value", "cli_prog_name", "errors.pydantic.dev", "validation error")


def beats(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beats", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )


def test_help_lists_commands_beats_emulators_and_the_version_option() -> None:
    result = beats("--help")
    assert result.returncode == 0, result.stderr
    for word in ("run", "emulate", "simulate", "log", "demo", "tail", "--version"):
        assert re.search(rf"^\s+{word}\s", result.stdout, re.M), word
    for table in GROUPS.values():
        for name, command in table.items():
            assert re.search(rf"^  {name} +{re.escape(command.summary)}$", result.stdout, re.M)
    assert DEMO.summary in result.stdout
    assert TAIL.summary in result.stdout


def test_the_docs_show_the_real_help() -> None:
    readme = (ROOT / "docs" / "commands.md").read_text()
    shown = readme.split("`beats --help` (checked against", 1)[1].split("```text\n", 1)[1]
    result = beats("--help", env={**os.environ, "COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    assert shown.split("```", 1)[0] == result.stdout


@pytest.mark.parametrize(("group", "table"), [("run", RUN), ("emulate", EMULATE)])
def test_group_help_lists_its_names(group: str, table: dict[str, object]) -> None:
    result = beats(group, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: beats {group} [-h] NAME")
    for name in table:
        assert re.search(rf"^  {name} +\S", result.stdout, re.M), name
    missing = beats(group)
    assert missing.returncode == 2
    assert "the following arguments are required: NAME" in missing.stderr


def test_version() -> None:
    result = beats("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"beats {version('works-beats')}\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_option_help_shows_real_defaults(command: str) -> None:
    result = beats(*command.split(), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: beats {command} [-h]")
    for internal in ("default factory", "<lambda>", "(default: null)", "null}"):
        assert internal not in result.stdout, internal


def test_option_help_defaults_of_lists_and_unset_options() -> None:
    out = " ".join(beats("run", "hivemq", "--help").stdout.split())
    assert "shared subscriptions. (default: #)" in out
    assert "unmatched go to 'messages'). (default: none)" in out
    assert "(unset: Kafka off). (default: not set)" in out
    assert "--mqtt-username str User name (overrides the URL's). (default: not set)" in out
    assert "--port int HTTP port. (default: 8101)" in out


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


def test_invalid_values_name_the_flag_and_what_is_allowed() -> None:
    result = beats("run", "hivemq", "--port", "x", "--log-level", "loud", "--kafka-partitions", "0")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "beats run hivemq: error: argument --port: input should be a valid integer, "
        "unable to parse string as an integer (got 'x')",
        "beats run hivemq: error: argument --log-level: input should be 'debug', 'info', "
        "'warning' or 'error' (got 'loud')",
        "beats run hivemq: error: argument --kafka-partitions: input should be greater than or "
        "equal to 1 (got '0')",
    ]


def test_errors_across_options_and_from_the_environment() -> None:
    url = beats("run", "hivemq", "--mqtt-url", "http://broker")
    assert url.returncode == 2
    assert url.stderr == "beats run hivemq: error: --mqtt-url must start with mqtt:// or mqtts://\n"
    env = {**os.environ, "BEATS_LOG_LEVEL": "chatty"}
    from_env = beats("emulate", "mqtt", "--port", "-1", env=env)
    assert from_env.returncode == 2
    assert from_env.stderr == (
        "beats emulate mqtt: error: argument --log-level: input should be 'debug', 'info', "
        "'warning' or 'error' (got 'chatty')\n"
    )
    for result in (url, from_env):
        for internal in PYDANTIC_INTERNALS:
            assert internal not in result.stderr


def test_a_malformed_list_says_what_is_wanted() -> None:
    result = beats("run", "hivemq", "--mqtt-topic", "[a/#")
    assert result.returncode == 2
    assert result.stderr == (
        "beats run hivemq: error: argument --mqtt-topic: not a JSON list (Expecting value); "
        'give a,b or a JSON list such as ["a", "b"] (got \'[a/#\')\n'
    )


def test_secret_values_are_not_echoed_in_errors() -> None:
    result = beats("run", "hivemq", "--mqtt-password", "hunter2", "--mqtt-password-file", "/none")
    assert result.returncode == 2
    assert result.stderr == (
        "beats run hivemq: error: give --mqtt-password or --mqtt-password-file, not both\n"
    )


def test_choices_are_case_insensitive() -> None:
    # --port x stops the command after the options are read: only its error may be reported
    result = beats(
        "run", "hivemq", "--log-level", "INFO", "--log-sync", "Full",
        "--kafka-security-protocol", "sasl_ssl", "--kafka-sasl-mechanism", "scram-sha-256",
        "--port", "x",
    )  # fmt: skip
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "argument --port:" in result.stderr
    settings = CliApp.run(HivemqSettings, cli_args=["--log-level", "WARNING", "--log-check", "OFF"])
    assert (settings.log_level, settings.log_check) == ("warning", "off")


def test_tail_refuses_a_url_it_cannot_use_at_once() -> None:
    result = beats("tail", "127.0.0.1:8101/events", timeout=30)
    assert result.returncode == 2
    assert result.stderr == (
        "beats tail: error: argument URL: '127.0.0.1:8101/events' is not an http:// or https:// "
        "URL with a host (e.g. http://127.0.0.1:8101/events)\n"
    )


async def test_tail_says_why_it_cannot_connect_and_when_it_retries(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/events"  # nothing listens there
    log = tmp_path / "tail.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "beats", "tail", url),
            stdout=out,
            stderr=out,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        pattern = re.compile(
            rf"WARNING common.client: feed {re.escape(url)}: cannot connect "
            r"\(Connection refused\); retrying in \d+\.\d s \(retries go on, at most 10 s apart\)"
        )
        await eventually(
            lambda: len(pattern.findall(log.read_text())) >= 2, what="two retry warnings"
        )
    finally:
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 20) == 0


async def test_tail_reports_a_refused_feed_in_one_line() -> None:
    async def not_found(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"no such feed"})

    async with serve_app(not_found) as base:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "beats", "tail", f"{base}/events/nope"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    assert out == b""
    assert err.decode().endswith(
        f"ERROR   beats: beats tail {base}/events/nope: HTTP 404: no such feed (not retried)\n"
    )
    assert len(err.splitlines()) == 1


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


def test_commands_run_on_uvloop_unless_asked_for_asyncio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvloop

    monkeypatch.delenv("BEATS_EVENT_LOOP", raising=False)
    assert event_loop_factory() is uvloop.new_event_loop
    monkeypatch.setenv("BEATS_EVENT_LOOP", "asyncio")
    assert event_loop_factory() is None
