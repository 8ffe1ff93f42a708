"""Services as real subprocesses (``python -m beats ...``), for kill -9 and signal tests, and a
black hole: a TCP server that accepts connections and never answers (a stuck upstream)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

__all__ = ["BlackHole", "ServiceProcess", "rss_bytes"]

ROOT = Path(__file__).parent.parent


class ServiceProcess:
    def __init__(self, args: list[str], *, port: int, log: Path, module: str = "beats") -> None:
        self.args = args
        self.module = module  # ``python -m <module> <args> --port <port>``
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(
        self, *, ready: bool = True, timeout: float = 20.0, until: Callable[[], bool] | None = None
    ) -> None:
        """Start and wait for ``/readyz`` (``ready``), else ``/healthz``, or for ``until()``."""
        out = self.log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args, "--port", str(self.port)],
            stdout=out,
            stderr=out,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        path = "/readyz" if ready else "/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited: {self.log.read_text()[-2000:]}")
            if until is not None:
                if until():
                    return
            else:
                try:
                    if httpx.get(self.base + path, timeout=1).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"service not {path} after {timeout}s: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def send(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid`` (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class BlackHole:
    """A TCP server on a free port that accepts every connection, reads nothing and never
    answers: a broker or upstream that is up but stuck."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="black-hole", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            self._held.append(connection)

    def close(self) -> None:
        self._server.close()
        for connection in self._held:
            connection.close()
