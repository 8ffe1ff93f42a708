"""Secrets from files: every secret option has a ``--…-file`` / ``BEATS_…_FILE`` form, read
once by the settings kernel; the secret never reaches logs, ``/readyz``, ``/metrics``, errors
or the process's command line. End to end with ``beats run opencti`` as a real process."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import CliApp

from beats.cli import DEMO, EMULATE, RUN, SIMULATE, TAIL
from beats.opencti.settings import OpenctiSettings
from common.settings import CommandSettings, is_secret
from tests.processes import ServiceProcess
from tests.support import free_port

TOKEN = "file-borne-token-7f3a9c"
COMMANDS = [*RUN.values(), *EMULATE.values(), *SIMULATE.values(), DEMO, TAIL]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.module}.{c.settings}")
def test_every_secret_option_has_a_file_form(command: object) -> None:
    settings_class, _ = command.load()  # type: ignore[attr-defined]
    for name, info in settings_class.model_fields.items():
        if is_secret(info.annotation):
            assert f"{name}_file" in settings_class.model_fields, name


def test_a_secret_without_a_file_form_is_refused_at_definition() -> None:
    with pytest.raises(TypeError, match="leaky is a secret without a leaky_file"):

        class Careless(CommandSettings):
            leaky: SecretStr | None = Field(None)


def test_file_env_and_cli_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    by_cli = CliApp.run(OpenctiSettings, cli_args=["--opencti-token-file", str(path)])
    assert by_cli.opencti_token is not None and by_cli.opencti_token.get_secret_value() == TOKEN
    monkeypatch.setenv("BEATS_OPENCTI_TOKEN_FILE", str(path))
    by_env = OpenctiSettings()
    assert by_env.opencti_token is not None and by_env.opencti_token.get_secret_value() == TOKEN
    assert TOKEN not in repr(by_env) and TOKEN not in str(by_env.model_dump())
    path.write_text("")
    assert OpenctiSettings().opencti_token is None  # an empty file leaves it unset
    monkeypatch.delenv("BEATS_OPENCTI_TOKEN_FILE")
    with pytest.raises(ValidationError) as both:
        OpenctiSettings(opencti_token=TOKEN, opencti_token_file=path)
    assert "not both" in str(both.value) and TOKEN not in str(both.value)
    with pytest.raises(ValidationError) as missing:
        OpenctiSettings(opencti_token_file=tmp_path / "absent")
    assert "cannot read it (No such file or directory)" in str(missing.value)


def test_the_opencti_beat_reads_its_token_from_a_file_and_never_shows_it(tmp_path: Path) -> None:
    """A real ``beats emulate opencti`` and ``beats run opencti``: the token only in a file."""
    secret = tmp_path / "opencti-token"
    secret.write_text(TOKEN + "\n")
    emulator = ServiceProcess(
        ["emulate", "opencti", "--token", TOKEN, "--heartbeat-interval", "0.2"],
        port=free_port(),
        log=tmp_path / "emulator.log",
    )
    beat = ServiceProcess(
        ["run", "opencti", "--opencti-url", "http://127.0.0.1:{}", "--opencti-token-file",
         str(secret), "--opencti-start", "0", "--data-dir", str(tmp_path / "data"),
         "--log-level", "debug"],
        port=free_port(),
        log=tmp_path / "beat.log",
    )  # fmt: skip
    beat.args[beat.args.index("--opencti-url") + 1] = emulator.base
    try:
        emulator.start(ready=False)
        beat.start()
        indicator = {"type": "create", "version": "4", "data": {"id": "indicator--1",
                     "type": "indicator", "object_marking_refs": []}}  # fmt: skip
        httpx.post(f"{emulator.base}/admin/events", json=[{"data": indicator}]).raise_for_status()
        deadline = time.monotonic() + 20
        while httpx.get(f"{beat.base}/readyz").json()["log"]["head"] < 1:
            assert time.monotonic() < deadline, "the event did not arrive"
            time.sleep(0.1)
        shown = [httpx.get(f"{beat.base}{path}").text for path in ("/readyz", "/metrics")]
        assert beat.process is not None
        cmdline = Path(f"/proc/{beat.process.pid}/cmdline").read_bytes().decode()
        environ = Path(f"/proc/{beat.process.pid}/environ").read_bytes().decode()
    finally:
        beat.stop()
        emulator.stop()
    assert str(secret) in cmdline and TOKEN not in cmdline and TOKEN not in environ
    assert all(TOKEN not in text for text in shown)
    assert TOKEN not in (tmp_path / "beat.log").read_text()
