"""FIWARE beat replicas behind one notification URL share one subscription on the broker (the
Orion emulator, NGSI v2 and NGSI-LD): found by its description, twins from a creation race
deleted alike by every replica, the secret agreed, none deleted while a replica still answers;
and as real processes behind a round-robin balancer, every change once in one Kafka topic."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from beats.fiware.emulator import Broker, create_app
from beats.fiware.service import build
from beats.fiware.settings import FiwareSettings
from beats.fiware.subscription_body import (
    legacy_description,
    secret_of,
    subscription_body,
)
from beats.fiware.subscriptions import SubscriptionKeeper
from common.service import Beat
from tests.brokers import KafkaBroker
from tests.fiware.test_fiware_beat import call, room, subscribed
from tests.processes import ServiceProcess
from tests.replicas import RoundRobin, Tally
from tests.support import eventually, free_port, read_sse, run_beat, serve_app


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[str, Broker]]:
    app = create_app()
    async with serve_app(app) as url:
        yield url, app.state.broker


SERVICE_PATH = {"Fiware-ServicePath": "/"}  # the beat's, which narrows what Orion lists


def replica(tmp_path: Path, url: str, name: str, notify_url: str, **options: Any) -> Beat:
    options.setdefault("subscription_check_interval", 0.2)
    settings = FiwareSettings(
        port=options.pop("port", None) or free_port(),
        data_dir=tmp_path / name,
        orion_url=url,
        notify_url=notify_url,
        **options,
    )
    return build(settings)


def keeper(beat: Beat) -> SubscriptionKeeper:
    assert isinstance(beat.source, SubscriptionKeeper)
    return beat.source


@pytest.mark.parametrize("ngsi", ["v2", "ld"])
async def test_replicas_share_one_subscription_and_its_generated_secret(
    tmp_path: Path, emulator: tuple[str, Broker], ngsi: str
) -> None:
    """No --notify-secret: the second replica takes the secret of the subscription the first
    created, so a notification the balancer hands to either is accepted."""
    url, broker = emulator
    port = free_port()
    notify = f"http://127.0.0.1:{port}/notify"  # the balancer's address: here, replica a
    options: dict[str, Any] = {"ngsi": ngsi, "fiware_service": ["north"]}
    a = replica(tmp_path, url, "a", notify, port=port, **options)
    b = replica(tmp_path, url, "b", notify, **options)
    async with run_beat(a) as base, run_beat(b):
        await subscribed(a)
        await subscribed(b)

        def agreed() -> bool:  # both may have created one: a check later, they agree
            return len(broker.subscriptions) == 1 and keeper(a).secret == keeper(b).secret

        await eventually(agreed, what="one subscription, one secret")
        (sub,) = broker.subscriptions.values()
        assert sub.tenant == "north"
        assert keeper(b).states["north"]["id"] == sub.id
        if ngsi == "v2":
            entity = room(1, 21.0)
            await call(
                url, "POST", "/v2/entities", json=entity, headers={"Fiware-Service": "north"}
            )
            (message,) = await read_sse(f"{base}/events/entities?last_event_id=0", count=1)
            assert message.json()["subject"] == "Room1"
    assert len(broker.subscriptions) == 1


async def test_twins_from_a_creation_race_are_deleted_by_every_replica_alike(
    tmp_path: Path, emulator: tuple[str, Broker]
) -> None:
    url, broker = emulator
    notify = f"http://127.0.0.1:{free_port()}/notify"
    settings = FiwareSettings(orion_url=url, notify_url=notify, notify_secret="s")
    for _ in range(3):  # what three replicas that all found none would have created
        body = subscription_body(settings, secret="s")
        await call(url, "POST", "/v2/subscriptions", json=body, headers=SERVICE_PATH)
    kept = min(broker.subscriptions)
    a = replica(tmp_path, url, "a", notify, notify_secret="s")
    b = replica(tmp_path, url, "b", notify, notify_secret="s")
    async with run_beat(a), run_beat(b):
        await subscribed(a)
        await subscribed(b)
        await eventually(lambda: list(broker.subscriptions) == [kept], what="one left")
        assert keeper(a).states["default"]["id"] == keeper(b).states["default"]["id"] == kept


async def test_a_configured_secret_is_put_into_the_subscription_found(
    tmp_path: Path, emulator: tuple[str, Broker]
) -> None:
    url, broker = emulator
    notify = f"http://127.0.0.1:{free_port()}/notify"
    async with run_beat(replica(tmp_path, url, "a", notify)):
        await eventually(lambda: len(broker.subscriptions) == 1, what="created")
    b = replica(tmp_path, url, "b", notify, notify_secret="configured")
    async with run_beat(b):
        await subscribed(b)
    ((sub_id, sub),) = broker.subscriptions.items()
    listed = (await call(url, "GET", f"/v2/subscriptions/{sub_id}")).json()
    assert secret_of(listed, ld=False) == "configured"
    assert sub.body["description"] == keeper(b).description


async def test_a_subscription_of_an_earlier_version_is_taken_over(
    tmp_path: Path, emulator: tuple[str, Broker]
) -> None:
    """Described ``works-beats:<tag>`` with this beat's notification URL: updated, not
    duplicated. One with another URL is another beat's: left alone."""
    url, broker = emulator
    notify = f"http://127.0.0.1:{free_port()}/notify"
    settings = FiwareSettings(orion_url=url, notify_url=notify)
    for target in (notify, "http://elsewhere:9/notify"):
        old = subscription_body(settings.model_copy(update={"notify_url": target}), secret="x")
        old["description"] = legacy_description(settings)
        await call(url, "POST", "/v2/subscriptions", json=old, headers=SERVICE_PATH)
    beat = replica(tmp_path, url, "a", notify, notify_secret="s")
    async with run_beat(beat):
        await subscribed(beat)
    descriptions = sorted(s.body["description"] for s in broker.subscriptions.values())
    assert descriptions == sorted([keeper(beat).description, legacy_description(settings)])


async def test_removal_on_shutdown_waits_for_the_last_replica(
    tmp_path: Path, emulator: tuple[str, Broker]
) -> None:
    url, broker = emulator
    port = free_port()
    notify = f"http://127.0.0.1:{port}/notify"
    a = replica(tmp_path, url, "a", notify, port=port, notify_secret="s")
    b = replica(tmp_path, url, "b", notify, notify_secret="s", remove_subscriptions=True)
    async with run_beat(a):
        async with run_beat(b):
            await subscribed(b)
        assert await keeper(b).remove() is False  # a still answers at the notification URL
        assert len(broker.subscriptions) == 1
    assert await keeper(b).remove() is True
    assert broker.subscriptions == {}


async def _subjects(bootstrap: str, topic: str, *, count: int, timeout: float = 60) -> list[str]:
    """Every event subject in the topic (all partitions), once ``count`` distinct are there."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    subjects: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            while len(set(subjects)) < count:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    subjects += [json.loads(r.value)["subject"] for r in batch]
    except TimeoutError:
        pass  # the tally says what is missing
    finally:
        await consumer.stop()
    return subjects


async def test_two_replica_processes_behind_a_balancer(tmp_path: Path, kafka: KafkaBroker) -> None:
    """Real processes: the Orion emulator, two beats (no --notify-secret: each generates one)
    behind a round-robin balancer that is their notification URL, one 3-partition topic."""
    total = 200
    emulator = ServiceProcess(["emulate", "orion"], port=free_port(), log=tmp_path / "orion.log")
    beats = []
    balancer_port = free_port()
    for name in ("a", "b"):
        args = ["run", "fiware", "--orion-url", emulator.base,
                "--notify-url", f"http://127.0.0.1:{balancer_port}/notify",
                "--data-dir", str(tmp_path / name), "--subscription-check-interval", "1",
                "--kafka-bootstrap", kafka.bootstrap, "--no-kafka-idempotence",
                "--kafka-partitions", "3", "--log-level", "warning"]  # fmt: skip
        beats.append(ServiceProcess(args, port=free_port(), log=tmp_path / f"{name}.log"))
    balancer = RoundRobin([b.base for b in beats])
    try:
        await asyncio.to_thread(emulator.start, ready=False)
        async with serve_app(balancer.app, port=balancer_port):
            for beat in beats:
                await asyncio.to_thread(beat.start)
            async with httpx.AsyncClient(base_url=emulator.base) as orion:
                for n in range(total):
                    entity = room(n, 20.0)
                    (await orion.post("/v2/entities", json=entity)).raise_for_status()
                subjects = await _subjects(kafka.bootstrap, "beats.fiware.entities", count=total)
                listed = await orion.get(
                    "/v2/subscriptions", params={"options": "count"}, headers=SERVICE_PATH
                )
    finally:
        for process in (*beats, emulator):
            process.stop()
    numbers = [int(s.removeprefix("Room")) for s in subjects]
    tally = Tally.of("FIWARE (Kafka, one topic)", range(total), numbers)
    print(f"\n{tally.line()}; balancer: {dict(balancer.forwarded)}")
    assert listed.headers["Fiware-Total-Count"] == "1"
    (sub,) = listed.json()
    assert sub["notification"]["timesSent"] == total and "failsCounter" not in sub["notification"]
    assert not tally.lost, f"lost: {tally.lost[:20]}"
    assert sorted(balancer.forwarded.values()) == [total // 2, total // 2]
