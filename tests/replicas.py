"""What the replica tests share: a round-robin HTTP load balancer in front of replicas, and the
count of what the union of several replicas' feeds lost and duplicated."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.brokers import MosquittoBroker
from tests.processes import ServiceProcess
from tests.support import eventually, free_port

__all__ = [
    "RoundRobin",
    "Tally",
    "beat_state",
    "hivemq_replicas",
    "kill_one_mid_stream",
    "kill_with_messages_in_flight",
    "steady_stream",
]

_HOP = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}


class RoundRobin:
    """A load balancer: each request goes to the next backend (per request, as an ingress with
    keep-alive upstreams does, not per connection); a backend that refuses the connection is
    skipped, and 502 comes back when none answers."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self.forwarded: Counter[str] = Counter()
        self._next = itertools.cycle(range(len(backends)))
        self.app = Starlette(routes=[Route("/{path:path}", self._forward, methods=["POST", "GET"])])

    async def _forward(self, request: Request) -> Response:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        first = next(self._next)
        for n in range(len(self.backends)):
            backend = self.backends[(first + n) % len(self.backends)]
            try:
                async with httpx.AsyncClient(timeout=10) as client:
                    answer = await client.request(
                        request.method, backend + path, content=body, headers=headers
                    )
            except httpx.ConnectError:
                continue
            self.forwarded[backend] += 1
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
            return Response(answer.content, answer.status_code, headers=kept)
        return Response(b"no backend answers", 502)


@dataclass
class Tally:
    """What the union of the replicas' feeds holds against what was sent."""

    what: str
    expected: set[int]
    seen: Counter[int]

    @classmethod
    def of(cls, what: str, expected: Iterable[int], *feeds: Iterable[int]) -> Tally:
        seen: Counter[int] = Counter()
        for feed in feeds:
            seen.update(feed)
        return cls(what, set(expected), seen)

    @property
    def lost(self) -> list[int]:
        return sorted(self.expected - set(self.seen))

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.seen.values() if count > 1)

    def line(self) -> str:
        return (
            f"REPLICAS {self.what}: sent {len(self.expected)}, received {len(set(self.seen))} "
            f"distinct, lost {len(self.lost)}, duplicated {self.duplicates}"
        )


async def beat_state(base: str) -> dict[str, int]:
    """The replica's log head and the messages it received (-1 each while it is down)."""
    async with httpx.AsyncClient(timeout=5) as client:
        try:
            head = (await client.get(f"{base}/readyz")).json()["log"]["head"]
            metrics = (await client.get(f"{base}/metrics")).text
        except httpx.TransportError:
            return {"head": -1, "received": -1}
    found = re.search(r"^beats_events_received_total ([0-9.e+]+)$", metrics, re.M)
    return {"head": int(head), "received": int(float(found.group(1))) if found else 0}


async def kill_with_messages_in_flight(victim: ServiceProcess, data_dir: Path) -> int:
    """Hold the victim's log locked until it has received messages it cannot commit, then
    kill -9 it; returns how many it had received and not committed."""
    lock = sqlite3.connect(data_dir / "hivemq.db", isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # the beat's writer now waits for the database
    try:

        async def stuck() -> bool:
            state = await beat_state(victim.base)
            return state["received"] - state["head"] >= 10

        await eventually(stuck, timeout=30, what="messages received and not committed")
        state = await beat_state(victim.base)
        in_flight = state["received"] - state["head"]
        victim.kill()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    return in_flight


@contextlib.asynccontextmanager
async def steady_stream(
    broker: MosquittoBroker, prefix: str, total: int, *, topics: int
) -> AsyncIterator[asyncio.Task[None]]:
    """``total`` QoS 1 messages ``{"n": n}`` on ``<prefix>/<n % topics>`` (MQTT 5), one every
    2 ms, sent by a task while the block runs; the block's end waits for the last."""
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5
    ) as client:

        async def send_all() -> None:
            for n in range(total):
                await client.publish(f"{prefix}/{n % topics}", json.dumps({"n": n}), qos=1)
                await asyncio.sleep(0.002)  # a steady stream, not a synchronisation

        task = asyncio.create_task(send_all())
        yield task
        await task


async def kill_one_mid_stream(replicas: list[ServiceProcess], data_dir: Path) -> int:
    """Once both replicas commit, ``kill -9`` the first while it holds messages it has not
    committed (:func:`kill_with_messages_in_flight`, ``data_dir`` its log's directory); once
    the other has carried on, restart it with its client id and data directory. Returns how
    many messages it had in flight."""
    victim, other = replicas

    async def both_busy() -> bool:
        return min([(await beat_state(p.base))["head"] for p in replicas]) >= 100

    await eventually(both_busy, timeout=60, what="both replicas committing")
    in_flight = await kill_with_messages_in_flight(victim, data_dir)
    at_kill = (await beat_state(other.base))["head"]

    async def carries_on() -> bool:
        return (await beat_state(other.base))["head"] >= at_kill + 100

    await eventually(carries_on, timeout=60, what="the other replica carrying on")
    await asyncio.to_thread(victim.start)
    return in_flight


def hivemq_replicas(
    tmp_path: Path, mqtt_url: str, bootstrap: str, *, group: str, version: str = "5"
) -> list[ServiceProcess]:
    """Two HiveMQ beat processes (not started) on one ``$share/beats/<group>/#`` subscription,
    each with its client id and data directory, producing into 3-partition topics."""
    made = []
    for name in ("a", "b"):
        args = ["run", "hivemq", "--mqtt-url", mqtt_url,
                "--mqtt-topic", f"$share/beats/{group}/#", "--mqtt-version", version,
                "--mqtt-client-id", f"beats-hivemq-{name}", "--data-dir", str(tmp_path / name),
                "--kafka-bootstrap", bootstrap, "--no-kafka-idempotence",
                "--kafka-partitions", "3", "--log-level", "warning"]  # fmt: skip
        made.append(ServiceProcess(args, port=free_port(), log=tmp_path / f"beat-{name}.log"))
    return made
