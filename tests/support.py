"""Helpers shared by the test suite: free ports and real servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from httpx_sse import aconnect_sse

__all__ = [
    "IdleSource",
    "SseMessage",
    "eventually",
    "free_port",
    "make_beat",
    "make_events",
    "npm_ci",
    "read_sse",
    "read_sse_until",
    "run_beat",
    "serve_app",
    "stalled_socket",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serve_app(app: Any, *, port: int | None = None) -> AsyncIterator[str]:
    """Run an ASGI app under a real uvicorn server on loopback; yields its base URL."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name=f"uvicorn:{port}")
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    """Poll ``check`` until it is true; fail the test with ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class SseMessage:
    id: str
    event: str
    data: str
    retry: int | None

    def json(self) -> Any:
        return json.loads(self.data)


async def read_sse(
    url: str,
    *,
    count: int,
    timeout: float = 10.0,
    headers: dict[str, str] | None = None,
    client: httpx.AsyncClient | None = None,
) -> list[SseMessage]:
    """Read ``count`` SSE messages (heartbeat comments are not messages) from ``url``."""
    return await read_sse_until(
        url,
        lambda messages: len(messages) >= count,
        timeout=timeout,
        headers=headers,
        client=client,
    )


async def read_sse_until(
    url: str,
    done: Callable[[list[SseMessage]], bool],
    *,
    timeout: float = 10.0,
    headers: dict[str, str] | None = None,
    client: httpx.AsyncClient | None = None,
) -> list[SseMessage]:
    """Read SSE messages from ``url`` until ``done(messages)`` holds."""
    messages: list[SseMessage] = []
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(httpx.AsyncClient(timeout=timeout))
        async with (
            asyncio.timeout(timeout),
            aconnect_sse(client, "GET", url, headers=dict(headers or {})) as source,
        ):
            async for sse in source.aiter_sse():
                if sse.event == "message" and not sse.data:
                    continue  # a bare retry: line
                messages.append(SseMessage(sse.id, sse.event, sse.data, sse.retry))
                if done(messages):
                    break
    return messages


@contextlib.asynccontextmanager
async def run_beat(beat: Any) -> AsyncIterator[str]:
    """Serve a :class:`common.service.Beat` until the block ends; yields its base URL."""
    async with serving(beat, beat.settings.port, what=f"{beat.name} beat") as base:
        yield base


@contextlib.asynccontextmanager
async def serving(service: Any, port: int, *, what: str) -> AsyncIterator[str]:
    """Run ``service.serve(shutdown)`` (a beat or the gateway) until the block ends, once its
    ``/healthz`` answers on ``port``; yields its base URL and stops it gracefully."""
    shutdown = asyncio.Event()
    task = asyncio.create_task(service.serve(shutdown), name=f"test:{what}")
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:

        async def up() -> bool:
            if task.done():
                task.result()
            try:
                return (await client.get(f"{base}/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(up, what=f"{what} to serve HTTP")
    try:
        yield base
    finally:
        shutdown.set()
        await asyncio.wait_for(task, timeout=30)


class IdleSource:
    """A source that only reports ready; tests commit events through ``beat.pipeline``."""

    async def run(self, pipeline: Any) -> None:
        pipeline.set_ready("source", True, "test source")
        await asyncio.Event().wait()


def make_events(
    count: int, *, start: int = 0, channel: str = "c", pad: int = 0, keys: int | None = None
) -> list[Any]:
    """Events numbered ``data.n``; ``keys``: that many partition keys in turn (else one each)."""
    from common.envelope import new_event

    return [
        new_event(
            beat="test",
            type="beats.test.thing",
            source="test://",
            channel=channel,
            partitionkey=f"k{n if keys is None else n % keys}",
            subject=f"s{n}",
            data={"n": n, "pad": "x" * pad},
        )
        for n in range(start, start + count)
    ]


def make_beat(tmp_path: Any, **options: Any) -> Any:
    """A kernel :class:`~common.service.Beat` with an idle source, on a free port."""
    from common.service import Beat
    from common.settings import BeatSettings

    settings = BeatSettings(port=free_port(), data_dir=tmp_path / "beat", **options)
    return Beat(name="test", settings=settings, source=IdleSource())


def stalled_socket(port: int, path: str) -> socket.socket:
    """A client that asks for a stream with a tiny receive buffer and then does not read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
    return sock


def fuzz_examples(default: int) -> int:
    """Hypothesis examples per property: ``default`` in ``make test``, ``BEATS_FUZZ_EXAMPLES``
    (10,000 in ``make fuzz``) when set."""
    import os

    return int(os.environ.get("BEATS_FUZZ_EXAMPLES", default))


def npm_ci(directory: Path, package: str) -> Path:
    """``directory/node_modules/<package>``, installed with ``npm ci`` from the directory's
    committed ``package-lock.json`` when missing (npm and node come from Debian)."""
    installed = directory / "node_modules" / package
    if not installed.is_dir():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError(f"npm is not installed: {package} cannot be installed")
        command = [npm, "ci", "--no-audit", "--no-fund"]
        subprocess.run(command, cwd=directory, check=True, timeout=300)
    return installed
