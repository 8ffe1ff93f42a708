"""Raw-socket SSE clients of the fan-out benchmarks, in their own process.

``python -m bench.sse_clients --port P [--port P2 ...] --path PATH --clients N``: opens ``N``
SSE connections to each port (raw sockets, so the client side costs as little as possible),
prints ``{"connected": ...}`` on stdout, records ``receive - send`` of every event (its
``"sent"`` field, wall clock) until a line arrives on stdin, then closes them and prints
``{"events": ..., "p50_ms": ..., "p99_ms": ...}``.
:class:`ClientProcess` drives it from a benchmark; the connection helpers are shared with the
benchmarks that keep their clients in-process (idle connections, ``bench/gateway_kafka.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from tests.processes import ROOT

__all__ = ["ClientProcess", "close", "connect_all", "quantiles_ms", "read"]

_SENT = re.compile(rb'"sent": ?([0-9.]+)')


@dataclass
class Client:
    latencies: list[float] = field(default_factory=list)
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None


async def _connect(port: int, path: str) -> Client:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    status = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n", 1)[0]
    if b" 200 " not in status:
        raise RuntimeError(f"{path}: {status.decode()}")
    return Client(reader=reader, writer=writer)


async def connect_all(port: int, path: str, count: int) -> list[Client]:
    gate = asyncio.Semaphore(200)

    async def one() -> Client:
        async with gate:
            return await _connect(port, path)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def read(client: Client) -> None:
    assert client.reader is not None
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while chunk := await client.reader.read(65536):
            now = time.time()
            client.latencies.extend(now - float(sent) for sent in _SENT.findall(chunk))


def close(clients: list[Client]) -> None:
    for client in clients:
        if client.writer is not None:
            client.writer.close()


def quantiles_ms(clients: list[Client]) -> dict[str, Any]:
    """Events received by all ``clients`` and the p50 / p99 of their latency, in ms."""
    latencies = sorted(x for c in clients for x in c.latencies)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "events": len(latencies),
        "p50_ms": round(quantiles[49] * 1000, 2),
        "p99_ms": round(quantiles[98] * 1000, 2),
    }


class ClientProcess:
    """``clients`` SSE clients of ``127.0.0.1:port`` + ``path`` (of each port) in a subprocess."""

    def __init__(self, *, ports: list[int], path: str, clients: int) -> None:
        self.args = [
            *(f"--port={port}" for port in ports),
            "--path",
            path,
            "--clients",
            str(clients),
        ]
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start it; return once every client is connected."""
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.sse_clients", *self.args, cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"bench.sse_clients exited {await self.process.wait()}")

    async def stop(self) -> dict[str, Any]:
        """Close the clients; what they received (:func:`quantiles_ms`)."""
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(b"stop\n")
        out, _ = await self.process.communicate()
        report: dict[str, Any] = json.loads(out)
        return report


async def _main(ports: list[int], path: str, count: int) -> dict[str, Any]:
    clients = [c for port in ports for c in await connect_all(port, path, count)]
    readers = [asyncio.create_task(read(c)) for c in clients]
    print(json.dumps({"connected": len(clients)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    close(clients)
    await asyncio.gather(*readers)
    return quantiles_ms(clients)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--port", type=int, action="append", required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--clients", type=int, required=True, help="per port")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_main(args.port, args.path, args.clients))), flush=True)


if __name__ == "__main__":
    main()
