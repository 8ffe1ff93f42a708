"""Soak: ``beats demo`` with Kafka at moderate load for ``--duration`` seconds, then a verdict.

``make soak`` (30 minutes) or ``python -m bench.soak --duration 300``. The demo (every emulator,
beat and the gateway in one process) publishes to a tansu broker; an SSE client reads every beat
through the gateway all along. Every ``--interval`` seconds the demo process's RSS and open file
descriptors, and each beat's source queue depth, Kafka lag and log head are sampled. At the end:

* **flat**: RSS of the last third within 10 % of the middle third (the first third is warm-up),
  open descriptors within 20 of the middle third's maximum, queue depths not growing. The
  demo's bounded buffers (the gateway's replay rings, the OpenCTI emulator's stream) are set to
  ``--bounds`` entries so that they are full within the first third: what grows after that is
  not a buffer filling up. The RSS slope of each third (MiB/min) is reported beside the
  verdict: a filling buffer's slope falls towards 0, a leak's does not;
* **consistent**: after the load stops, every beat's Kafka lag reaches 0, and the gateway
  client received exactly every event of every beat's log (by sequence, no gap, no duplicate).
* **stops**: the demo exits within 30 s of SIGINT (else it is killed and the check fails).

Writes ``bench/results/soak.json`` and exits non-zero if a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from common.client import Gap, subscribe
from tests.brokers import KafkaBroker
from tests.support import free_port

HERE = Path(__file__).parent
BEATS = ("hivemq", "fiware", "opencti", "ditto")


def _sample_process(pid: int) -> dict[str, int]:
    """RSS, split into anonymous memory (the heap) and file-backed pages, and open descriptors."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    kib = {key: int(status[key].split()[0]) * 1024 for key in ("VmRSS", "RssAnon", "RssFile")}
    return {
        "rss": kib["VmRSS"], "rss_anon": kib["RssAnon"], "rss_file": kib["RssFile"],
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }  # fmt: skip


def _metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


async def _sample_beats(client: httpx.AsyncClient, ports: dict[str, int]) -> dict[str, Any]:
    sample: dict[str, Any] = {}
    for beat, port in ports.items():
        ready = (await client.get(f"http://127.0.0.1:{port}/readyz")).json()
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        sample[beat] = {
            "head": ready["log"]["head"],
            "kafka_lag": ready.get("kafka", {}).get("lag", 0),
            "queue": _metric(metrics, "beats_source_queue_depth"),
        }
    return sample


class _Reader:
    """Every event of every beat through the gateway (one ``/streams/<beat>`` each), by beat."""

    def __init__(self, gateway: str) -> None:
        self.gateway = gateway
        self.seen: dict[str, list[int]] = {b: [] for b in BEATS}
        self.gaps = 0

    async def _one(self, beat: str) -> None:
        async for item in subscribe(f"{self.gateway}/streams/{beat}", last_event_id=None):
            if isinstance(item, Gap):
                self.gaps += 1
            elif item.sequence is not None:
                self.seen[beat].append(item.sequence)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            for beat in BEATS:
                tasks.create_task(self._one(beat), name=f"soak:read:{beat}")


def _thirds(values: list[float]) -> tuple[float, float]:
    third = max(1, len(values) // 3)
    return statistics.median(values[third : 2 * third]), statistics.median(values[-third:])


def _rss_slopes(samples: list[dict[str, Any]]) -> list[float]:
    """MiB per minute over each third (least squares): a buffer filling up shows as a slope
    that falls to near 0; a leak keeps it."""
    third = max(2, len(samples) // 3)
    slopes = []
    for part in (samples[:third], samples[third : 2 * third], samples[2 * third :]):
        if len(part) < 2:
            continue
        times = [s["t"] / 60 for s in part]
        rss = [s["process"]["rss"] / 2**20 for s in part]
        slopes.append(round(statistics.linear_regression(times, rss).slope, 2))
    return slopes


def _verdict(
    samples: list[dict[str, Any]], final: dict[str, Any], reader: _Reader, stop_s: float | None
) -> dict[str, Any]:
    rss = [s["process"]["rss"] for s in samples]
    fds = [s["process"]["fds"] for s in samples]
    middle_rss, last_rss = _thirds(rss)
    third = max(1, len(fds) // 3)
    queues = [sum(b["queue"] for b in s["beats"].values()) for s in samples]
    checks = {
        "rss_flat": last_rss <= middle_rss * 1.10,
        "fds_flat": max(fds[-third:]) <= max(fds[third : 2 * third]) + 20,
        "queues_flat": max(queues[-third:]) <= max(max(queues[third : 2 * third]), 100),
        "kafka_caught_up": all(b["kafka_lag"] == 0 for b in final.values()),
        "gateway_complete": all(
            sorted(reader.seen[b]) == list(range(reader.seen[b][0], final[b]["head"] + 1))
            for b in BEATS
            if reader.seen[b]
        )
        and all(reader.seen[b] for b in BEATS)
        and reader.gaps == 0,
        "stopped_on_sigint": stop_s is not None,
    }
    return {
        "checks": checks,
        "rss_mib_middle_last": [round(middle_rss / 2**20, 1), round(last_rss / 2**20, 1)],
        "rss_mib_per_min_by_third": _rss_slopes(samples),
        "fds_first_last": [fds[0], fds[-1]],
        "events": {b: final[b]["head"] for b in BEATS},
        "received_through_gateway": {b: len(reader.seen[b]) for b in BEATS},
    }


def _demo_command(
    data: Path, kafka: str, ports: dict[str, int], gateway: int, bounds: int
) -> list[str]:
    options = {
        "--data-dir": str(data), "--kafka-bootstrap": kafka, "--gateway-port": str(gateway),
        "--mqtt-port": str(free_port()), "--opencti-emulator-port": str(free_port()),
        "--ditto-emulator-port": str(free_port()), "--orion-emulator-port": str(free_port()),
        "--rate": "10", "--stations": "5", "--threat-rate": "10", "--car-interval": "0.05",
        "--city-interval": "0.05", "--log-level": "warning", "--no-kafka-idempotence": None,
        "--ring-size": str(bounds), "--threat-retention": str(bounds),
    }  # fmt: skip
    options.update({f"--{b}-port": str(p) for b, p in ports.items()})
    argv = [sys.executable, "-m", "beats", "demo"]
    for key, value in options.items():
        argv += [key] if value is None else [key, value]
    return argv


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT)


async def soak(duration: float, interval: float, bounds: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    (workdir / "kafka").mkdir()
    kafka = KafkaBroker(workdir / "kafka")
    kafka.start()
    ports = {b: free_port() for b in BEATS}
    gateway = free_port()
    command = _demo_command(workdir / "data", kafka.bootstrap, ports, gateway, bounds)
    demo = _spawn(command, workdir / "demo.log")
    samples: list[dict[str, Any]] = []
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            await _until_up(client, f"http://127.0.0.1:{gateway}/readyz")
            reader = _Reader(f"http://127.0.0.1:{gateway}")
            reading = asyncio.create_task(reader.run())
            started = time.monotonic()
            while time.monotonic() - started < duration:
                await asyncio.sleep(interval)
                sample = {
                    "t": round(time.monotonic() - started),
                    "process": _sample_process(demo.pid),
                    "beats": await _sample_beats(client, ports),
                }
                samples.append(sample)
                print(json.dumps(sample), flush=True)
            final = await _settle(client, ports, reader)
            reading.cancel()
    finally:
        stop_s = _stop(demo)
        kafka.kill()
    verdict = _verdict(samples, final, reader, stop_s)
    allocator = {
        k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k == "LD_PRELOAD"
    }
    return {
        "duration_s": duration, "bounds": bounds, "allocator_env": allocator,
        "stop_s": stop_s, "samples": samples, **verdict,
    }  # fmt: skip


def _stop(demo: subprocess.Popen[bytes], timeout: float = 30.0) -> float | None:
    """SIGINT, then the seconds the demo took to exit; ``None`` if it had to be killed (a
    shutdown that hangs is a failed check, and the run's figures are still written)."""
    began = time.monotonic()
    demo.send_signal(signal.SIGINT)
    try:
        demo.wait(timeout)
    except subprocess.TimeoutExpired:
        print(f"the demo did not stop within {timeout:.0f}s of SIGINT: killed", file=sys.stderr)
        demo.kill()
        demo.wait()
        return None
    return round(time.monotonic() - began, 1)


async def _until_up(client: httpx.AsyncClient, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (await client.get(url)).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout}s")


async def _settle(client: httpx.AsyncClient, ports: dict[str, int], reader: _Reader) -> Any:
    """Freeze each beat's head, then let Kafka and the gateway client get past it (the load
    keeps running): ``kafka_lag`` becomes the frozen events Kafka has not acknowledged."""
    final = await _sample_beats(client, ports)

    def behind(now: dict[str, Any]) -> dict[str, int]:
        return {b: max(0, final[b]["head"] - (now[b]["head"] - now[b]["kafka_lag"])) for b in BEATS}

    for _ in range(60):
        now = await _sample_beats(client, ports)
        late = [b for b in BEATS if not reader.seen[b] or max(reader.seen[b]) < final[b]["head"]]
        if not late and not any(behind(now).values()):
            break
        await asyncio.sleep(1)
    for beat, lag in behind(now).items():
        reader.seen[beat] = [s for s in reader.seen[beat] if s <= final[beat]["head"]]
        final[beat]["kafka_lag"] = lag
    return final


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds of load")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument(
        "--bounds",
        type=int,
        default=3000,
        help="the gateway's ring size and the OpenCTI emulator's retention (entries): small "
        "enough that both are full within the first third, so that what grows after is a leak",
    )
    args = parser.parse_args()
    result = asyncio.run(soak(args.duration, args.interval, args.bounds))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    if not all(result["checks"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
