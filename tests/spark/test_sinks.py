"""The FIWARE write-back sink against a tiny local HTTP receiver: fragments in chunks, headers,
idempotence per batch id (also across a sink rebuilt after a restart), and a failed batch that
is not recorded and goes out again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from spark_receiver import FiwareWriteback
from spark_receiver.sinks import WritebackError
from tests.support import serve_app

pytestmark = [pytest.mark.spark, pytest.mark.slow]


class Receiver:
    """Records every POST /writeback; answers 503 while ``failing``."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], Any]] = []
        self.failing = False
        self.app = FastAPI()
        self.app.post("/writeback")(self.writeback)

    async def writeback(self, request: Request) -> JSONResponse:
        if self.failing:
            return JSONResponse({"error": "broker down"}, 503)
        body = await request.json()
        self.posts.append((dict(request.headers), body))
        return JSONResponse({"results": [{"id": e["id"], "ok": True} for e in body]})


async def test_writeback_is_batched_and_idempotent_per_batch_id(spark: Any, tmp_path: Path) -> None:
    rows = [(f"urn:Room:{n}", "Room", 20.0 + n, n % 2 == 0, None) for n in range(7)]
    df = spark.createDataFrame(rows, "id string, type string, forecast double, ok boolean, x int")
    receiver = Receiver()
    ledger = tmp_path / "ckpt" / "writeback.batches"
    async with serve_app(receiver.app) as base:

        def sink() -> FiwareWriteback:
            return FiwareWriteback(
                base,
                ledger=ledger,
                service="city",
                servicepath="/rooms",
                chunk_size=3,
                token="t0k",
            )

        first = sink()
        await asyncio.to_thread(first, df, 0)
        await asyncio.to_thread(first, df, 0)  # Spark replays batch 0: nothing goes out
        await asyncio.to_thread(sink(), df, 0)  # nor after a restart (the ledger is a file)
        receiver.failing = True
        with pytest.raises(WritebackError, match="503"):
            await asyncio.to_thread(first, df, 1)
        receiver.failing = False
        await asyncio.to_thread(sink(), df, 1)  # the failed batch was not recorded
    assert [len(body) for _, body in receiver.posts] == [3, 3, 1, 3, 3, 1]
    headers, body = receiver.posts[0]
    assert headers["fiware-service"] == "city" and headers["fiware-servicepath"] == "/rooms"
    assert headers["authorization"] == "Bearer t0k"
    assert body[0] == {
        "id": "urn:Room:0",
        "type": "Room",
        "forecast": {"type": "Number", "value": 20.0},
        "ok": {"type": "Boolean", "value": True},
    }
    assert ledger.read_text().split() == ["0", "1"]
