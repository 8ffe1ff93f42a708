"""``foreachBatch`` sinks: results back to FIWARE (``/writeback``) and to Kafka.

Idempotence per batch id. After a crash Spark runs the last planned batch again, with the same
id and the same rows, and calls ``foreachBatch`` again. Each sink keeps a :class:`BatchLedger`
(a small append-only file, for example inside the query's checkpoint directory) of the batch
ids it has completely sent: a batch already in the ledger is skipped. A crash *between* sending
and recording means the batch is sent again on replay — harmless for the FIWARE beat, whose
``/writeback`` applies batch upserts (the same fragments give the same entity state), and for
Kafka consumers that deduplicate on the record key. A batch is recorded only after every
request of it succeeded; a failure raises, which fails the query, so Spark replays the batch
at the next start.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import httpx
from pyspark.sql import DataFrame, Row

__all__ = ["BatchLedger", "FiwareWriteback", "KafkaBatchWriter", "WritebackError", "to_entity"]

Entity = dict[str, Any]


class WritebackError(RuntimeError):
    """The FIWARE beat did not apply every entity of a batch."""


class BatchLedger:
    """The batch ids a sink has completely sent, one per line in ``path`` (fsynced)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._done: set[int] = set()
        if self.path.exists():
            lines = self.path.read_text().split()
            self._done = {int(line) for line in lines if line.isdigit()}

    def __contains__(self, batch_id: int) -> bool:
        return batch_id in self._done

    def record(self, batch_id: int) -> None:
        with self.path.open("a") as file:
            file.write(f"{batch_id}\n")
            file.flush()
            os.fsync(file.fileno())
        self._done.add(batch_id)


def _ngsi_type(value: Any) -> str:
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int | float):
        return "Number"
    if isinstance(value, datetime | date):
        return "DateTime"
    if isinstance(value, dict | list):
        return "StructuredValue"
    return "Text"


def _plain(value: Any) -> Any:
    if isinstance(value, Row):
        return {k: _plain(v) for k, v in value.asDict().items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def to_entity(row: Row) -> Entity:
    """A result row as an NGSI v2 entity fragment: ``id``, ``type``, and every other non-null
    column as ``{"type": <NGSI type>, "value": ...}``. A string column ``entity`` holding a
    JSON object (v2 or NGSI-LD) is sent as it is instead."""
    fields = row.asDict()
    if set(fields) == {"entity"}:
        entity: Entity = json.loads(fields["entity"])
        return entity
    entity = {"id": str(fields.pop("id")), "type": str(fields.pop("type", "Thing"))}
    for name, value in fields.items():
        if value is not None:
            entity[name] = {"type": _ngsi_type(value), "value": _plain(value)}
    return entity


def _chunks(items: Iterable[Entity], size: int) -> Iterator[list[Entity]]:
    chunk: list[Entity] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class FiwareWriteback:
    """``query.writeStream.foreachBatch(FiwareWriteback(...))``: POST results to the FIWARE
    beat's ``/writeback`` (a JSON list of entity fragments per request, ``chunk_size`` each).

    ``url`` is the beat's base URL or its ``/writeback`` URL; ``service`` / ``servicepath`` go
    out as ``Fiware-Service`` / ``Fiware-ServicePath``; ``token`` as a bearer token;
    ``entity`` maps a result row to a fragment (default :func:`to_entity`). Runs on the driver:
    meant for results (aggregates, predictions), not raw feeds.
    """

    def __init__(
        self,
        url: str,
        *,
        ledger: str | os.PathLike[str],
        token: str | None = None,
        service: str | None = None,
        servicepath: str | None = None,
        chunk_size: int = 500,
        timeout: float = 30.0,
        entity: Callable[[Row], Entity] = to_entity,
    ) -> None:
        self.url = url if url.rstrip("/").endswith("/writeback") else f"{url.rstrip('/')}/writeback"
        self.ledger = BatchLedger(ledger)
        self.chunk_size = chunk_size
        self.timeout = timeout
        self.entity = entity
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        if service:
            self.headers["Fiware-Service"] = service
        if servicepath:
            self.headers["Fiware-ServicePath"] = servicepath

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        if batch_id in self.ledger:
            return
        entities = (self.entity(row) for row in df.toLocalIterator())
        with httpx.Client(timeout=self.timeout) as client:
            for chunk in _chunks(entities, self.chunk_size):
                response = client.post(self.url, json=chunk, headers=self.headers)
                if response.status_code != 200:
                    raise WritebackError(
                        f"batch {batch_id}: {self.url} answered {response.status_code}: "
                        f"{response.text[:500]}"
                    )
        self.ledger.record(batch_id)


class KafkaBatchWriter:
    """``foreachBatch`` sink producing each row as JSON to a Kafka topic (kafka-python, acks=all).

    ``key`` names the column whose value is the record key (stable keys let consumers
    deduplicate a replayed batch); every send is confirmed before the batch is recorded.
    ``idempotence=False`` for brokers without the idempotent producer (tansu).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        ledger: str | os.PathLike[str],
        key: str | None = None,
        timeout: float = 30.0,
        idempotence: bool = True,
    ) -> None:
        self.bootstrap = bootstrap
        self.idempotence = idempotence
        self.topic = topic
        self.key = key
        self.timeout = timeout
        self.ledger = BatchLedger(ledger)

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        if batch_id in self.ledger:
            return
        from kafka import KafkaProducer  # type: ignore[import-untyped]

        producer = KafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            linger_ms=5,
            enable_idempotence=self.idempotence,
        )
        try:
            futures = []
            for row in df.toLocalIterator():
                record = _plain(row)
                key = str(record[self.key]).encode() if self.key else None
                value = json.dumps(record, separators=(",", ":")).encode()
                futures.append(producer.send(self.topic, value=value, key=key))
            producer.flush(self.timeout)
            for future in futures:
                future.get(timeout=self.timeout)
        finally:
            producer.close(self.timeout)
        self.ledger.record(batch_id)
