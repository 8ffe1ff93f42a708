"""Every command as a real process: a port it cannot have stops it at once with one clear line
and exit code 3, before it consumed anything; SIGTERM and SIGINT stop it within
``--shutdown-timeout`` + a few seconds whatever it is doing (a source stuck on a broker that
never answers, SSE clients that stopped reading, a shutdown step that hangs: the watchdog, exit
code 4), and a second signal ends it at once (128 + the signal)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from beats.fiware.subscriptions import SECRET_HEADER
from tests.processes import ROOT, BlackHole, ServiceProcess
from tests.support import free_port, stalled_socket

SHUTDOWN = 2.0  # --shutdown-timeout of these tests
BOUND = SHUTDOWN + 5.0 + 1.5  # the watchdog's margin is 5 s; 1.5 s for a loaded machine


@pytest.fixture
def hole() -> Iterator[BlackHole]:
    server = BlackHole()
    yield server
    server.close()


@pytest.fixture
def taken() -> Iterator[int]:
    """A port somebody else listens on."""
    with socket.create_server(("127.0.0.1", 0)) as other:
        yield other.getsockname()[1]


def _dead() -> str:
    return f"127.0.0.1:{free_port()}"


SOURCES = {  # what each command would talk to: nobody, here
    "run hivemq": ["--mqtt-url", f"mqtt://{_dead()}"],
    "run fiware": ["--orion-url", f"http://{_dead()}"],
    "run opencti": ["--opencti-url", f"http://{_dead()}"],
    "run ditto": ["--ditto-url", f"http://{_dead()}"],
    "run gateway": ["--beat", f"hivemq=http://{_dead()}"],
    "emulate orion": [],
    "emulate ditto": [],
    "emulate opencti": [],
    "emulate mqtt": [],
}
WHO = {
    "run hivemq": "hivemq beat",
    "run fiware": "fiware beat",
    "run opencti": "opencti beat",
    "run ditto": "ditto beat",
    "run gateway": "gateway",
    "emulate orion": "orion emulator",
    "emulate ditto": "ditto emulator",
    "emulate opencti": "opencti emulator",
    "emulate mqtt": "MQTT broker",
}


def beats(args: list[str], timeout: float = 30) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "beats", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )
    return result, time.monotonic() - started


def _startup(command: list[str]) -> float:
    """Seconds the command takes to start and print its help, on this machine now: the
    baseline a prompt refusal is measured against (imports alone take seconds when the shared
    machine is busy)."""
    result, took = beats([*command, "--help"])
    assert result.returncode == 0, result.stderr
    return took


@pytest.mark.parametrize("command", sorted(SOURCES))
def test_a_taken_port_stops_the_command_with_one_line(
    command: str, taken: int, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    args = [*command.split(), *SOURCES[command], "--port", str(taken)]
    if command.startswith("run") and command != "run gateway":
        args += ["--data-dir", str(data)]
    result, took = beats(args)
    assert result.returncode == 3, result.stderr
    assert took < _startup(command.split()) + 5
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # one line, no traceback
    assert (
        f"{WHO[command]}: cannot listen on 127.0.0.1:{taken} (address in use); "
        "choose another port with --port or BEATS_PORT"
    ) in lines[0]
    assert not data.exists()  # the log was never opened: nothing consumed
    if command == "run hivemq":  # docs/operations.md shows this line (with the default port)
        page = (ROOT / "docs" / "operations.md").read_text()
        assert lines[0].split("beats: ", 1)[1].replace(str(taken), "8101") in page


def test_a_taken_port_stops_the_demo_before_anything_started(taken: int, tmp_path: Path) -> None:
    ports = ["--mqtt-port", "--hivemq-port", "--opencti-port", "--opencti-emulator-port"]
    ports += ["--ditto-port", "--ditto-emulator-port", "--orion-emulator-port", "--gateway-port"]
    args = ["demo", "--data-dir", str(tmp_path / "demo"), "--fiware-port", str(taken)]
    for option in ports:
        args += [option, str(free_port())]
    result, took = beats(args)
    assert result.returncode == 3, result.stderr
    assert took < _startup(["demo"]) + 5
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert (
        f"fiware beat: cannot listen on 127.0.0.1:{taken} (address in use); "
        "choose another port with --fiware-port or BEATS_FIWARE_PORT"
    ) in result.stderr
    assert "Works Beats demo is running" not in result.stdout
    assert not (tmp_path / "demo").exists()


def test_a_host_that_is_not_here_names_the_host_option(tmp_path: Path) -> None:
    result, _ = beats(["emulate", "orion", "--host", "192.0.2.1", "--port", str(free_port())])
    assert result.returncode == 3
    assert "(address not available on this machine); choose another host with --host or " in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def stop(process: ServiceProcess, sig: signal.Signals) -> tuple[int, float]:
    started = time.monotonic()
    process.send(sig)
    code = process.wait(BOUND + 5)
    return code, time.monotonic() - started


@pytest.mark.parametrize(
    ("name", "option", "scheme", "sig"),
    [
        ("hivemq", "--mqtt-url", "mqtt", signal.SIGTERM),
        ("opencti", "--opencti-url", "http", signal.SIGINT),
        ("ditto", "--ditto-url", "http", signal.SIGTERM),
        ("fiware", "--orion-url", "http", signal.SIGINT),
    ],
)
def test_a_beat_whose_source_is_stuck_stops_on_a_signal(
    name: str, option: str, scheme: str, sig: signal.Signals, hole: BlackHole, tmp_path: Path
) -> None:
    """The source's broker accepts the connection and never answers."""
    args = ["run", name, option, f"{scheme}://127.0.0.1:{hole.port}"]
    args += ["--data-dir", str(tmp_path / "data"), "--shutdown-timeout", str(SHUTDOWN)]
    process = ServiceProcess(args, port=free_port(), log=tmp_path / "beat.log")
    try:
        process.start(ready=False)
        time.sleep(1.0)  # the source is now waiting on the black hole
        assert httpx.get(f"{process.base}/readyz", timeout=5).status_code == 503
        code, took = stop(process, sig)
    finally:
        process.stop()
    assert code == 0, process.output()
    assert took < BOUND
    assert "Traceback" not in process.output()


def test_stalled_sse_clients_do_not_hold_the_shutdown(tmp_path: Path) -> None:
    """A beat and the gateway in front of it, each with clients that stopped reading a replay
    far larger than the socket buffers: both stop within their bound."""
    beat_port = free_port()
    args = ["run", "fiware", "--orion-url", f"http://{_dead()}", "--notify-secret", "s"]
    args += ["--data-dir", str(tmp_path / "data"), "--shutdown-timeout", str(SHUTDOWN)]
    beat = ServiceProcess(args, port=beat_port, log=tmp_path / "beat.log")
    args = ["run", "gateway", "--beat", f"fiware=http://127.0.0.1:{beat_port}"]
    args += ["--shutdown-timeout", str(SHUTDOWN)]
    gateway = ServiceProcess(args, port=free_port(), log=tmp_path / "gateway.log")
    stalled: list[socket.socket] = []
    try:
        beat.start(ready=False)
        gateway.start(ready=False)
        pad = "x" * 200_000
        for n in range(40):  # 8 MB of events
            entity = {"id": f"R{n}", "type": "Room", "note": {"type": "Text", "value": pad}}
            response = httpx.post(
                f"{beat.base}/notify",
                content=json.dumps({"subscriptionId": "s", "data": [entity]}),
                headers={SECRET_HEADER: "s", "Content-Type": "application/json"},
                timeout=10,
            )
            assert response.status_code == 200
        stalled += [stalled_socket(beat.port, "/events?last_event_id=0") for _ in range(3)]
        stalled += [
            stalled_socket(gateway.port, "/streams/fiware?last_event_id=0") for _ in range(3)
        ]
        time.sleep(1.5)  # their buffers fill up
        gateway_code, gateway_took = stop(gateway, signal.SIGTERM)
        beat_code, beat_took = stop(beat, signal.SIGINT)
    finally:
        for sock in stalled:
            sock.close()
        beat.stop()
        gateway.stop()
    assert (gateway_code, beat_code) == (0, 0), beat.output() + gateway.output()
    assert gateway_took < BOUND and beat_took < BOUND
    assert "Traceback" not in beat.output() + gateway.output()


def _mqtt_up(log: Path) -> bool:
    return "embedded MQTT broker on" in log.read_text()


@pytest.mark.parametrize("name", ["orion", "ditto", "opencti", "mqtt"])
def test_every_emulator_stops_on_sigterm_with_clients_connected(name: str, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "emulator.log"
    process = ServiceProcess(["emulate", name], port=port, log=log)
    held: list[socket.socket] = []
    try:
        process.start(ready=False, until=(lambda: _mqtt_up(log)) if name == "mqtt" else None)
        for _ in range(3):  # idle connections, and a stream where the emulator has one
            sock = socket.create_connection(("127.0.0.1", port))
            if name == "opencti":
                auth = "Authorization: Bearer emulator-token"
                sock.sendall(f"GET /stream HTTP/1.1\r\nHost: t\r\n{auth}\r\n\r\n".encode())
            held.append(sock)
        code, took = stop(process, signal.SIGTERM)
    finally:
        for sock in held:
            sock.close()
        process.stop()
    assert code == 0, process.output()
    assert took < 10 + 5 + 1.5  # the emulators' shutdown timeout is the default 10 s
    assert "Traceback" not in process.output()


def test_the_demo_stops_on_sigterm(tmp_path: Path) -> None:
    ports = ["--mqtt-port", "--hivemq-port", "--opencti-port", "--opencti-emulator-port"]
    ports += ["--ditto-port", "--ditto-emulator-port", "--fiware-port", "--orion-emulator-port"]
    gateway = free_port()
    args = ["demo", "--data-dir", str(tmp_path / "demo"), "--shutdown-timeout", str(SHUTDOWN)]
    args += ["--gateway-port", str(gateway)]
    for option in ports:
        args += [option, str(free_port())]
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "beats", *args], stdout=out, stderr=out, cwd=ROOT
        )
    try:
        deadline = time.monotonic() + 60
        while "Works Beats demo is running" not in log.read_text():  # the gateway is up: all are
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(BOUND + 5)
        took = time.monotonic() - started
    finally:
        process.kill()
        process.wait()
    assert code == 0, log.read_text()[-3000:]
    assert took < BOUND
    assert "Traceback" not in log.read_text()


def _overrunning_beat(hole: BlackHole, tmp_path: Path) -> ServiceProcess:
    """A FIWARE beat that deletes its subscriptions on shutdown from a broker that never
    answers: its last step waits on 10-second HTTP timeouts, longer than the bound."""
    args = ["run", "fiware", "--orion-url", f"http://127.0.0.1:{hole.port}"]
    args += ["--remove-subscriptions", "--data-dir", str(tmp_path / "data")]
    args += ["--shutdown-timeout", "1"]
    process = ServiceProcess(args, port=free_port(), log=tmp_path / "beat.log")
    process.start(ready=False)
    return process


def test_a_shutdown_that_overruns_is_ended_by_the_watchdog(hole: BlackHole, tmp_path: Path) -> None:
    process = _overrunning_beat(hole, tmp_path)
    try:
        code, took = stop(process, signal.SIGTERM)
    finally:
        process.stop()
    assert code == 4, process.output()
    assert 1 + 5 - 0.5 < took < 1 + 5 + 1.5
    assert "shutdown did not finish 6s after SIGTERM received; forcing the exit (code 4)" in (
        process.output()
    )
    assert "Traceback" not in process.output()


def test_a_second_signal_exits_at_once(hole: BlackHole, tmp_path: Path) -> None:
    process = _overrunning_beat(hole, tmp_path)
    try:
        process.send(signal.SIGTERM)
        time.sleep(1.0)  # now in its slow last step
        code, took = stop(process, signal.SIGINT)
    finally:
        process.stop()
    assert code == 128 + signal.SIGINT, process.output()
    assert took < 1.0
    assert "second SIGINT: exiting now" in process.output()
