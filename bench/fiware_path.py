"""Benchmark: notification ingest — the FIWARE beat against the FIWARE PySpark connector.

Both receivers get the same NGSI v2 notifications (one entity each, as Orion sends them) over
HTTP, from 1 and from 8 concurrent senders, with small and with > 2 KB pretty-printed bodies.
What counts is what *arrives*: for the beat, events served on its SSE stream (and acknowledged
by Kafka); for the connector, entities that reached its Spark Streaming job. Rates are delivered
events per second from the first request to the last delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from tests.brokers import KafkaBroker
from tests.processes import ServiceProcess
from tests.support import free_port

__all__ = ["run"]

SECRET = "bench-secret"
CASES = [("small", 0, 1), ("small", 0, 8), ("2KB", 2500, 1), ("2KB", 2500, 8)]


def _count(out: Path) -> int:
    return int(out.read_text() or 0) if out.exists() else -1


def _bodies(case: str, pad: int, count: int, senders: int) -> list[bytes]:
    """Distinct notifications per case: the beat's event ids come from the content, so a body
    repeated from an earlier case would be dropped as a duplicate (and never arrive)."""
    bodies = []
    for n in range(count):
        entity: dict[str, Any] = {
            "id": f"{case}-{senders}-{n}",
            "type": "Room",
            "temperature": {"type": "Number", "value": n, "metadata": {}},
        }
        if pad:
            entity["note"] = {"type": "Text", "value": "x" * pad, "metadata": {}}
        bodies.append(
            json.dumps(
                {"subscriptionId": "bench", "data": [entity]}, indent=2 if pad else None
            ).encode()
        )
    return bodies


async def _post_all(url: str, bodies: list[bytes], senders: int, headers: dict[str, str]) -> None:
    """Send every body, or as many as fit in 60 s (a stalled receiver must not hang the run)."""
    queue = list(bodies)
    async with httpx.AsyncClient(timeout=5) as client:

        async def sender() -> None:
            while queue:
                body = queue.pop()
                # the connector drops connections under load: such a body is not delivered
                with contextlib.suppress(httpx.HTTPError):
                    await client.post(url, content=body, headers=headers)

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(60):
                await asyncio.gather(*(sender() for _ in range(senders)))


async def _beat_case(base: str, case: str, pad: int, senders: int, count: int) -> dict[str, float]:
    headers = {
        "X-Beats-Secret": SECRET,
        "Ngsiv2-AttrsFormat": "normalized",
        "Content-Type": "application/json",
    }
    async with httpx.AsyncClient(timeout=120) as client:
        head = int((await client.get(f"{base}/readyz")).json()["log"]["head"])
        started = time.perf_counter()
        posting = asyncio.create_task(
            _post_all(f"{base}/notify", _bodies(case, pad, count, senders), senders, headers)
        )
        seen = 0
        with contextlib.suppress(TimeoutError):  # a lost notification must not hang the run
            async with asyncio.timeout(120):
                url = f"{base}/events?last_event_id={head}"
                async with aconnect_sse(client, "GET", url) as source:
                    async for sse in source.aiter_sse():
                        if sse.event == "beats.fiware.entity":
                            seen += 1
                            if seen == count:
                                break
        done = time.perf_counter()
        await posting
        while (await client.get(f"{base}/readyz")).json()["kafka"]["lag"] > 0:  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # polling another process: there is no event to await
        kafka_done = time.perf_counter()
    return {
        "delivered": seen,
        "per_s": seen / (done - started),
        "kafka_per_s": seen / (kafka_done - started),
    }


async def _fpc_case(
    port: int, out: Path, case: str, pad: int, senders: int, count: int
) -> dict[str, float]:
    before = _count(out)
    started = time.perf_counter()
    await _post_all(
        f"http://127.0.0.1:{port}/",
        _bodies(case, pad, count, senders),
        senders,
        {"Content-Type": "application/json", "Fiware-Service": "bench", "Fiware-Servicepath": "/"},
    )
    last, last_change = before, time.perf_counter()
    while time.perf_counter() - last_change < 5 and last - before < count:
        await asyncio.sleep(0.2)
        now = _count(out)
        if now != last:
            last, last_change = now, time.perf_counter()
    delivered = last - before
    return {"delivered": delivered, "per_s": delivered / max(last_change - started, 1e-9)}


async def run(*, count: int = 2000) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-fiware-"))
    (workdir / "kafka").mkdir()
    kafka = KafkaBroker(workdir / "kafka")
    kafka.start()
    beat = ServiceProcess(
        [
            "run",
            "fiware",
            "--orion-url",
            f"http://127.0.0.1:{free_port()}",
            "--notify-secret",
            SECRET,
            "--data-dir",
            str(workdir / "beat"),
            "--kafka-bootstrap",
            kafka.bootstrap,
            "--no-kafka-idempotence",
            "--log-level",
            "error",
            "--sse-queue-size",
            str(count * 4),
        ],
        port=free_port(),
        log=workdir / "beat.log",
    )
    fpc_port, out = free_port(), workdir / "fpc.count"
    fpc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).parent / "fpc_receiver.py"),
        "--port",
        str(fpc_port),
        "--socket-port",
        str(free_port()),
        "--out",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    results: dict[str, Any] = {"notifications_per_case": count}
    try:
        beat.start(ready=False)
        await _wait_for_fpc(fpc_port, out)
        for case, pad, senders in CASES:
            name = f"{case}_{senders}_senders"
            ours = await _beat_case(beat.base, case, pad, senders, count)
            theirs = await _fpc_case(fpc_port, out, case, pad, senders, count)
            results[name] = {
                "beat_delivered": ours["delivered"],
                "beat_per_s": round(ours["per_s"]),
                "beat_kafka_per_s": round(ours["kafka_per_s"]),
                "connector_delivered": theirs["delivered"],
                "connector_per_s": round(theirs["per_s"]),
                "ratio_to_connector": round(ours["per_s"] / theirs["per_s"], 1)
                if theirs["per_s"]
                else None,
            }
            print(f"fiware bench {name}: {results[name]}", file=sys.stderr, flush=True)
    finally:
        beat.stop()
        fpc.kill()
        await fpc.wait()
        kafka.kill()
    return results


async def _wait_for_fpc(port: int, out: Path, timeout: float = 120) -> None:
    """The connector's HTTP endpoint answers only once Spark's receiver connected."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if _count(out) >= 0:
                try:
                    await client.get(f"http://127.0.0.1:{port}/")
                    await asyncio.sleep(3)  # let the socket receiver settle
                    return
                except httpx.HTTPError:
                    pass
            await asyncio.sleep(0.5)
    raise RuntimeError("the FIWARE PySpark connector did not start")
