"""Scale-out on real processes: tansu with a 3-partition topic, two HiveMQ beat replicas on one
MQTT shared subscription (Mosquitto), two gateway replicas in Kafka mode (started with the
commands of docs/gateway.md), 5,000 QoS 1 messages.

* client 1 reads half of the feed from gateway A, leaves, and reconnects to gateway B with its
  ``Last-Event-ID``: it gets exactly the rest;
* a beat replica is killed with ``kill -9`` while it holds messages it has not committed, and
  restarted: the other carries on meanwhile, its persistent session hands the rest back;
* client 2 reads from gateway B, which is killed with ``kill -9`` mid-stream: the client resumes
  on gateway A with its last id, with no gap.

Counts of lost and duplicated events are printed (``SCALE`` lines). ``BEATS_SCALE_MESSAGES`` sets
the size (5,000 in ``make test``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from httpx_sse import aconnect_sse

from gateway.positions import decode_position
from tests.brokers import KafkaBroker, MosquittoBroker
from tests.docs.examples import ROOT, blocks, commands
from tests.processes import ServiceProcess
from tests.replicas import Tally, hivemq_replicas, kill_one_mid_stream, steady_stream
from tests.support import eventually, free_port

pytestmark = [pytest.mark.kafka, pytest.mark.mqtt, pytest.mark.slow]

TOTAL = int(os.environ.get("BEATS_SCALE_MESSAGES", "5000"))
IDLE = 20.0
DOC = ROOT / "docs" / "gateway.md"


def doc_gateway_commands() -> tuple[list[str], str]:
    """The gateway commands and the curl of docs/gateway.md's Kafka-mode example."""
    (block,) = [b for b in blocks(DOC) if b.directive and "test_scale_out" in b.directive[1]]
    lines = commands(block.text)
    gateways = [line for line in lines if line.startswith("beats run gateway")]
    (curl,) = [line for line in lines if line.startswith("curl")]
    assert len(gateways) == 2, lines
    return gateways, curl


def as_service(line: str, *, kafka: str, log: Path) -> ServiceProcess:
    """A documented ``beats run gateway ... &`` on a free port and the test's broker."""
    words = shlex.split(line.replace("127.0.0.1:9092", kafka).rstrip("& "))
    port = words.index("--port")
    del words[port : port + 2]
    return ServiceProcess(words[1:], port=free_port(), log=log)


@pytest.fixture
def beats(
    tmp_path: Path, mosquitto: MosquittoBroker, kafka: KafkaBroker
) -> Iterator[list[ServiceProcess]]:
    made = hivemq_replicas(tmp_path, mosquitto.url, kafka.bootstrap, group="scale")
    yield made
    for process in made:
        process.stop()


@pytest.fixture
def gateways(tmp_path: Path, kafka: KafkaBroker) -> Iterator[list[ServiceProcess]]:
    lines, _ = doc_gateway_commands()
    made = [
        as_service(line, kafka=kafka.bootstrap, log=tmp_path / f"gateway-{n}.log")
        for n, line in enumerate(lines)
    ]
    yield made
    for process in made:
        process.stop()


@dataclass
class Reader:
    """One SSE client: the message numbers and ids it received, and its last id."""

    name: str
    numbers: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    came: list[tuple[str, str]] = field(default_factory=list)
    """Each event's gateway and CloudEvent id (with its SSE id: what a copy is told by)."""
    distinct: set[int] = field(default_factory=set)
    gaps: int = 0

    @property
    def last_id(self) -> str | None:
        return self.ids[-1] if self.ids else None

    async def read(self, base: str, *, until: int) -> None:
        """Read ``/streams/hivemq`` from ``base`` (from the start, or after the last id) until
        ``until`` distinct messages in all (a duplicate does not count: it would end the read
        one message early and pass for a loss); a dropped connection, or ``IDLE`` seconds
        without an event (heartbeats keep the connection open), ends it."""
        headers = {"Last-Event-ID": self.last_id or "0"}
        loop = asyncio.get_running_loop()
        with contextlib.suppress(httpx.TransportError, TimeoutError):
            async with (
                httpx.AsyncClient(timeout=httpx.Timeout(10, read=30)) as client,
                aconnect_sse(client, "GET", f"{base}/streams/hivemq", headers=headers) as sse,
                asyncio.timeout(IDLE) as idle,
            ):
                async for message in sse.aiter_sse():
                    idle.reschedule(loop.time() + IDLE)
                    if message.event == "beats.gap":
                        self.gaps += 1
                    elif message.data:
                        event = json.loads(message.data)
                        self.numbers.append(event["data"]["n"])
                        self.ids.append(message.id)
                        self.came.append((base, event["id"]))
                        self.distinct.add(event["data"]["n"])
                    if len(self.distinct) >= until:
                        return

    def copies(self) -> list[str]:
        """Where each copy of a message received more than once came from."""
        seen: dict[int, list[int]] = {}
        for at, number in enumerate(self.numbers):
            seen.setdefault(number, []).append(at)
        return [
            f"n={number}: " + "; ".join(self._where(at) for at in ats)
            for number, ats in seen.items()
            if len(ats) > 1
        ]

    def _where(self, at: int) -> str:
        base, event_id = self.came[at]
        return f"{base} {moved(self.ids[max(0, at - 1) : at + 1])} event {event_id}"

    def tally(self) -> Tally:
        return Tally.of(f"client {self.name}", range(TOTAL), self.numbers)


def moved(ids: list[str]) -> str:
    """The partition and offset of the last event: what changed between the last two ids."""
    now = dict(p.split("=") for p in decode_position(ids[-1]).split(";"))
    before = dict(p.split("=") for p in decode_position(ids[-2]).split(";")) if ids[1:] else {}
    return ",".join(f"{label}@{at}" for label, at in now.items() if before.get(label) != at)


async def test_two_beats_two_gateways_kills_and_moves_lose_nothing(
    beats: list[ServiceProcess],
    gateways: list[ServiceProcess],
    mosquitto: MosquittoBroker,
    tmp_path: Path,
) -> None:
    for process in [*beats, *gateways]:
        await asyncio.to_thread(process.start)
    gateway_a, gateway_b = gateways
    one, two = Reader("1 (A, then B)"), Reader("2 (B, killed, then A)")
    async with steady_stream(mosquitto, "scale", TOTAL, topics=11) as sending:
        first_half = asyncio.create_task(one.read(gateway_a.base, until=TOTAL // 2))
        before_kill = asyncio.create_task(two.read(gateway_b.base, until=TOTAL))
        in_flight = await kill_one_mid_stream(beats, tmp_path / "a")
        await eventually(lambda: len(two.numbers) >= TOTAL // 3, timeout=60, what="client 2")
        gateway_b.kill()  # kill -9 mid-stream
        await before_kill
        assert not sending.done(), "the kills must happen mid-stream"
        after_kill = asyncio.create_task(two.read(gateway_a.base, until=TOTAL))
        await first_half
        await asyncio.to_thread(gateway_b.start)  # as an orchestrator restarts it
        await one.read(gateway_b.base, until=TOTAL)
        await after_kill
    curl = await run_documented_curl(gateway_a)
    dropped = await duplicates_dropped(gateway_a)
    print(f"\nSCALE {TOTAL} messages; beat replica killed with {in_flight} in flight; "
          f"gateway A dropped {dropped} redelivered records")  # fmt: skip
    for reader in (one, two):
        tally = reader.tally()
        print(tally.line().replace("REPLICAS", "SCALE") + f", gap signals {reader.gaps}")
        assert not tally.lost, f"{reader.name} lost {tally.lost[:20]}"
        assert tally.duplicates == 0, f"{reader.name} received copies: {reader.copies()}"
        assert len(set(reader.ids)) == len(reader.ids)
        assert reader.gaps == 0
    assert "data: " in curl


async def run_documented_curl(gateway: ServiceProcess) -> str:
    _, line = doc_gateway_commands()
    words = shlex.split(line.replace("127.0.0.1:8080", f"127.0.0.1:{gateway.port}"))
    done = await asyncio.to_thread(
        subprocess.run, [*words, "--max-time", "3"], capture_output=True, text=True, check=False
    )
    return done.stdout


async def duplicates_dropped(gateway: ServiceProcess) -> int:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{gateway.base}/metrics")).text
    found = re.search(
        r'^beats_gateway_kafka_duplicates_total\{beat="hivemq"\} ([0-9.e+]+)$', text, re.M
    )
    return int(float(found.group(1))) if found else 0
