"""Request bodies through real processes and raw sockets: a FIWARE beat (``/notify``,
``/writeback``) and the gateway. Oversized bodies, chunked or declared, get 413 without being
buffered (the beat's RSS is measured); a trickled body is closed at ``--http-body-timeout``; a
client that leaves mid-body costs one log line and no traceback; each is counted in ``/metrics``;
normal notifications sent in between are committed."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from beats.fiware.subscriptions import SECRET_HEADER
from tests.processes import ServiceProcess, rss_bytes
from tests.support import free_port

SECRET = "bodies-secret"
ROUTE_LIMIT = 256 * 1024  # --max-body-bytes of /notify and /writeback
BODY_TIMEOUT = 1.0
MiB = 1024 * 1024


class RawClient:
    """One HTTP/1.1 connection written by hand; what the server sends is collected by a thread,
    so an early answer (413) is seen even while the client is still sending."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.received = bytearray()
        self.closed = threading.Event()
        self.closed_at = 0.0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while data := self.sock.recv(65536):
                self.received += data
        except OSError:
            pass
        self.closed_at = time.monotonic()
        self.closed.set()

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def status(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while b"\r\n" not in self.received and not self.closed.is_set():
            assert time.monotonic() < deadline, "no response"
            time.sleep(0.01)
        match = re.match(rb"HTTP/1\.1 (\d{3})", bytes(self.received))
        assert match, f"not a response: {bytes(self.received)[:200]!r}"
        return int(match.group(1))

    def close(self) -> None:
        with contextlib.suppress(OSError):  # shutdown() first: the reading thread holds it
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def head(method: str, path: str, **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


NOTIFY = {
    SECRET_HEADER: SECRET,
    "Content-Type": "application/json",
    "Authorization": f"Bearer {SECRET}",  # /writeback's token (ignored by /notify)
}
CHUNKED = {"Transfer-Encoding": "chunked"}


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def rejected(base: str, reason: str, prefix: str = "beats") -> float:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    found = re.search(rf'^{prefix}_http_rejected_total{{reason="{reason}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def log_lines(process: ServiceProcess, needle: str) -> list[str]:
    return [line for line in process.output().splitlines() if needle in line]


@pytest.fixture(scope="module")
def fiware(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    tmp = tmp_path_factory.mktemp("bodies")
    port = free_port()
    args = [
        "run",
        "fiware",
        "--orion-url",
        f"http://127.0.0.1:{free_port()}",  # nobody: the beat only receives here
        "--notify-url",
        f"http://127.0.0.1:{port}/notify",
        "--notify-secret",
        SECRET,
        "--writeback-token",
        SECRET,
        "--data-dir",
        str(tmp / "data"),
        "--max-body-bytes",
        str(ROUTE_LIMIT),
        "--http-body-timeout",
        str(BODY_TIMEOUT),
    ]
    process = ServiceProcess(args, port=port, log=tmp / "fiware.log")
    process.start(ready=False)
    yield process
    process.send(signal.SIGTERM)
    assert process.wait(15) == 0
    assert "Traceback" not in process.output()


def notify_one(base: str) -> None:
    n = time.time_ns()  # a new event each time (a repeated one would be a duplicate)
    entity = {"id": f"Room{n}", "type": "Room", "temperature": {"type": "Number", "value": n}}
    body = json.dumps({"subscriptionId": "s", "data": [entity]})
    response = httpx.post(f"{base}/notify", content=body, headers=NOTIFY, timeout=10)
    assert response.status_code == 200, response.text


def log_head(base: str) -> int:
    return int(httpx.get(f"{base}/readyz", timeout=5).json()["log"]["head"])


@pytest.mark.parametrize("path", ["/notify", "/writeback"])
def test_a_chunked_body_over_the_limit_gets_413_and_is_not_buffered(
    fiware: ServiceProcess, path: str
) -> None:
    """The attack: 600 MiB chunked to /writeback took 1.2 GiB of RSS before its 413. Here a
    client keeps sending up to 256 MiB: the beat stops reading past the limit, answers 413, and
    its RSS does not grow with the body."""
    counted = rejected(fiware.base, "too_large")
    lines = len(log_lines(fiware, f"refused POST {path}"))
    before = rss_bytes(fiware.pid)
    client = RawClient(fiware.port)
    client.send(head("POST", path, **NOTIFY, **CHUNKED))
    piece, sent = chunk(b" " * 65536), 0
    while sent < 256 * MiB and client.send(piece):  # on, whatever the beat answers
        sent += 65536
    assert client.status() == 413
    assert client.closed.wait(5), "the rest of the body is not read for ever"
    client.close()
    grown = rss_bytes(fiware.pid) - before
    assert sent < 64 * MiB, f"{sent} bytes were taken in"
    assert grown < 24 * MiB, f"RSS grew by {grown / MiB:.1f} MiB"
    assert rejected(fiware.base, "too_large") == counted + 1
    assert len(log_lines(fiware, f"refused POST {path}")) == lines + 1
    head_before = log_head(fiware.base)
    notify_one(fiware.base)  # normal input still goes through
    assert log_head(fiware.base) == head_before + 1


def test_a_declared_body_over_the_limit_gets_413_before_it_is_sent(fiware: ServiceProcess) -> None:
    client = RawClient(fiware.port)
    started = time.monotonic()
    client.send(head("POST", "/notify", **NOTIFY, **{"Content-Length": str(600 * MiB)}))
    assert client.status() == 413
    assert time.monotonic() - started < 2
    assert b"body over 262144 bytes" in client.received
    client.close()


def test_a_trickled_body_gets_408_at_the_deadline_and_is_counted(fiware: ServiceProcess) -> None:
    counted = rejected(fiware.base, "body_timeout")
    lines = len(log_lines(fiware, "POST /notify from"))
    client = RawClient(fiware.port)
    client.send(head("POST", "/notify", **NOTIFY, **{"Content-Length": "1000"}))
    started = time.monotonic()
    while not client.closed.is_set() and time.monotonic() - started < 10:
        client.send(b" ")  # a byte every 0.1 s never completes the body in time
        time.sleep(0.1)
    assert client.closed.is_set()
    assert BODY_TIMEOUT * 0.8 < client.closed_at - started < BODY_TIMEOUT + 2
    assert client.status() == 408
    client.close()
    assert rejected(fiware.base, "body_timeout") == counted + 1
    new = log_lines(fiware, "POST /notify from")[lines:]
    assert len(new) == 1 and "request body not complete in 1.0s (408)" in new[0]
    notify_one(fiware.base)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_client_leaving_mid_body_costs_one_log_line_and_no_traceback(
    fiware: ServiceProcess, framing: str
) -> None:
    counted = rejected(fiware.base, "disconnected")
    lines = len(fiware.output().splitlines())
    client = RawClient(fiware.port)
    if framing == "chunked":
        client.send(head("POST", "/notify", **NOTIFY, **CHUNKED) + chunk(b'{"data": ['))
    else:
        client.send(head("POST", "/notify", **NOTIFY, **{"Content-Length": "5000"}) + b"{")
    time.sleep(0.3)
    client.close()
    deadline = time.monotonic() + 5
    while rejected(fiware.base, "disconnected") == counted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rejected(fiware.base, "disconnected") == counted + 1
    new = fiware.output().splitlines()[lines:]
    assert len(new) == 1, new  # one line, no traceback
    assert "aborted POST /notify" in new[0] and "the client left after" in new[0]
    notify_one(fiware.base)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[ServiceProcess]:
    args = ["run", "gateway", "--beat", f"hivemq=http://127.0.0.1:{free_port()}"]
    args += ["--http-body-timeout", str(BODY_TIMEOUT)]
    process = ServiceProcess(args, port=free_port(), log=tmp_path / "gateway.log")
    process.start(ready=False)
    yield process
    process.send(signal.SIGTERM)
    assert process.wait(15) == 0
    assert "Traceback" not in process.output()


def test_the_gateway_bounds_bodies_it_does_not_read(gateway: ServiceProcess) -> None:
    """No gateway route reads a body: the answer comes first, then what the client still sends
    is dropped up to a bound (the connection is closed beyond), and a trickle is closed at the
    deadline and counted."""
    flood = RawClient(gateway.port)
    flood.send(head("GET", "/healthz", **CHUNKED))
    piece, sent = chunk(b" " * 65536), 0
    while sent < 256 * MiB and flood.send(piece):
        sent += 65536
    assert flood.status() == 200
    assert sent < 64 * MiB, f"{sent} bytes were taken in"
    flood.close()
    trickle = RawClient(gateway.port)
    trickle.send(head("GET", "/healthz", **{"Content-Length": "1000"}))
    started = time.monotonic()
    while not trickle.closed.is_set() and time.monotonic() - started < 10:
        trickle.send(b" ")
        time.sleep(0.1)
    assert BODY_TIMEOUT * 0.8 < trickle.closed_at - started < BODY_TIMEOUT + 2
    trickle.close()
    assert rejected(gateway.base, "body_timeout", prefix="beats_gateway") == 1
    assert len(log_lines(gateway, "GET /healthz from")) == 1


def test_clients_leaving_requests_without_a_body_are_not_counted(fiware: ServiceProcess) -> None:
    """Only a body cut short is an aborted request: SSE readers and others that leave are not."""
    counted = rejected(fiware.base, "disconnected")
    lines = len(fiware.output().splitlines())
    for path in ("/events?last_event_id=0", "/healthz"):
        client = RawClient(fiware.port)
        client.send(head("GET", path))
        assert client.status() == 200
        client.close()
    time.sleep(0.5)
    assert rejected(fiware.base, "disconnected") == counted
    assert fiware.output().splitlines()[lines:] == []


def test_an_emulator_bounds_bodies_too(tmp_path: Path) -> None:
    """The emulators take bodies (entity updates, messages, admin events): 16 MiB at most."""
    emulator = ServiceProcess(["emulate", "orion"], port=free_port(), log=tmp_path / "orion.log")
    emulator.start(ready=False)
    try:
        client = RawClient(emulator.port)
        client.send(
            head("POST", "/v2/op/update", **{"Content-Type": "application/json"}, **CHUNKED)
        )
        piece, sent = chunk(b" " * 65536), 0
        while sent < 256 * MiB and client.send(piece):
            sent += 65536
        assert client.status() == 413
        assert sent < 96 * MiB, f"{sent} bytes were taken in"
        client.close()
        assert httpx.get(f"{emulator.base}/version", timeout=5).status_code == 200
    finally:
        emulator.send(signal.SIGTERM)
        assert emulator.wait(15) == 0
    assert "Traceback" not in emulator.output()
