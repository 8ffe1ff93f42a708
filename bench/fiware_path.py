"""Benchmark: notification ingest — the FIWARE beat against the FIWARE PySpark connector.

Both receivers get the same NGSI v2 notifications (one entity each, as Orion sends them) over
HTTP, from 1 and from 8 concurrent senders, with small and with > 2 KB pretty-printed bodies.
What counts is what *arrives*: for the beat, events served on its SSE stream (and acknowledged
by Kafka); for the connector, entities that reached its Spark Streaming job. Rates are delivered
events per second from the first request to the last delivery.

The baseline, right before the beat in each case: the bare stack (``bench/bare_fiware.py``, its
own process: uvicorn with the beat's HTTP protocol class and Starlette, ``json.loads`` and 204),
taking the same bodies from as many senders; its rate is answered requests per second. The
senders run in their own process (``bench/senders.py``), never in the measuring one.
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

from bench.profiling import flame
from bench.senders import send
from tests.brokers import KafkaBroker
from tests.processes import ServiceProcess
from tests.support import free_port

__all__ = ["run"]

SECRET = "bench-secret"
_NGSI_HEADERS = {"Ngsiv2-AttrsFormat": "normalized", "Content-Type": "application/json"}
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


def _write_bodies(workdir: Path, case: str, pad: int, count: int, senders: int) -> Path:
    path = workdir / f"bodies-{case}-{senders}.json"
    path.write_text(json.dumps([b.decode() for b in _bodies(case, pad, count, senders)]))
    return path


async def _bare_case(port: int, bodies: Path, senders: int) -> dict[str, float]:
    """The bare stack (``bench.bare_fiware``): answered notifications per second."""
    sent = await send(
        f"http://127.0.0.1:{port}/notify", bodies, senders=senders, headers=_NGSI_HEADERS
    )
    seconds = sent["finished"] - sent["started"]
    # near 1: the senders' process was saturated, so the bare stack's rate is a lower bound
    return {"answered": sent["ok"], "per_s": sent["ok"] / seconds, "cpu": sent["cpu_s"] / seconds}


async def _beat_case(base: str, bodies: Path, senders: int, count: int) -> dict[str, float]:
    headers = {"X-Beats-Secret": SECRET, **_NGSI_HEADERS}
    async with httpx.AsyncClient(timeout=120) as client:
        head = int((await client.get(f"{base}/readyz")).json()["log"]["head"])
        posting = asyncio.create_task(
            send(f"{base}/notify", bodies, senders=senders, headers=headers)
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
        done = time.time()  # wall clock: the senders' process tells when it started
        started = (await posting)["started"]
        while (await client.get(f"{base}/readyz")).json()["kafka"]["lag"] > 0:  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # polling another process: there is no event to await
        kafka_done = time.time()
    return {
        "delivered": seen,
        "per_s": seen / (done - started),
        "kafka_per_s": seen / (kafka_done - started),
    }


async def _fpc_case(
    port: int, out: Path, bodies: Path, senders: int, count: int
) -> dict[str, float]:
    before = _count(out)
    headers = {
        "Content-Type": "application/json",
        "Fiware-Service": "bench",
        "Fiware-Servicepath": "/",
    }
    sent = await send(f"http://127.0.0.1:{port}/", bodies, senders=senders, headers=headers)
    started = sent["started"]
    last, last_change = before, time.time()
    while time.time() - last_change < 5 and last - before < count:
        await asyncio.sleep(0.2)
        now = _count(out)
        if now != last:
            last, last_change = now, time.time()
    delivered = last - before
    return {"delivered": delivered, "per_s": delivered / max(last_change - started, 1e-9)}


def _beat(workdir: Path, kafka: KafkaBroker, count: int) -> ServiceProcess:
    return ServiceProcess(
        ["run", "fiware", "--orion-url", f"http://127.0.0.1:{free_port()}",
         "--notify-secret", SECRET, "--data-dir", str(workdir / "beat"),
         "--kafka-bootstrap", kafka.bootstrap, "--no-kafka-idempotence", "--log-level", "error",
         "--sse-queue-size", str(count * 4)],
        port=free_port(), log=workdir / "beat.log",
    )  # fmt: skip


async def _start_fpc(port: int, out: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).parent / "fpc_receiver.py"), "--port", str(port),
        "--socket-port", str(free_port()), "--out", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def _case(
    *, bare: int, beat: ServiceProcess, fpc: tuple[int, Path], bodies: Path, senders: int,
    count: int,
) -> dict[str, Any]:  # fmt: skip
    """One case: the bare stack (the baseline, right before), the beat, the connector."""
    stack = await _bare_case(bare, bodies, senders)
    with flame(beat.pid, f"fiware_path_{bodies.stem}"):
        ours = await _beat_case(beat.base, bodies, senders, count)
    theirs = await _fpc_case(*fpc, bodies, senders, count)
    return {
        "baseline_bare_stack_per_s": round(stack["per_s"]),
        "bare_stack_answered": stack["answered"],
        "bare_stack_senders_cpu_fraction": round(stack["cpu"], 2),
        "beat_delivered": ours["delivered"],
        "beat_per_s": round(ours["per_s"]),
        "beat_kafka_per_s": round(ours["kafka_per_s"]),
        "ratio_sse_to_bare_stack": round(ours["per_s"] / stack["per_s"], 3),
        "connector_delivered": theirs["delivered"],
        "connector_per_s": round(theirs["per_s"]),
        "ratio_to_connector": round(ours["per_s"] / theirs["per_s"], 1)
        if theirs["per_s"]
        else None,
    }


async def run(*, count: int = 2000) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-fiware-"))
    (workdir / "kafka").mkdir()
    kafka = KafkaBroker(workdir / "kafka")
    kafka.start()
    beat = _beat(workdir, kafka, count)
    bare = ServiceProcess(
        [], port=free_port(), log=workdir / "bare.log", module="bench.bare_fiware"
    )
    fpc_port, out = free_port(), workdir / "fpc.count"
    fpc = await _start_fpc(fpc_port, out)
    results: dict[str, Any] = {"notifications_per_case": count}
    try:
        beat.start(ready=False)
        bare.start(ready=False)
        await _wait_for_fpc(fpc_port, out)
        for case, pad, senders in CASES:
            name = f"{case}_{senders}_senders"
            results[name] = await _case(
                bare=bare.port, beat=beat, fpc=(fpc_port, out), senders=senders,
                bodies=_write_bodies(workdir, case, pad, count, senders), count=count,
            )  # fmt: skip
            print(f"fiware bench {name}: {results[name]}", file=sys.stderr, flush=True)
    finally:
        bare.stop()
        beat.stop()
        with contextlib.suppress(ProcessLookupError):  # it may have failed to start
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
