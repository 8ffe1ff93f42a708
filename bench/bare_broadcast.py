"""The bare stack under the gateway's fan-out, for ``bench/gateway_fanout.py``.

``python -m bench.bare_broadcast --port N --mqtt-port M --topic T``: an aiomqtt subscriber of
``T`` (QoS 1, on the broker at 127.0.0.1:``M``) and a Starlette app served like a beat
(:mod:`bench.bare`) whose ``GET /events`` is an sse-starlette ``EventSourceResponse``; each
client has its own ``asyncio.Queue`` and every MQTT message goes to every queue, as one SSE event
whose data is the payload. No log, no envelope, no ids, no bounds: the latency it fans out with is
the floor of this stack in one Python process. ``/readyz`` answers 200 once subscribed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiomqtt
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.bare import arguments, run, serve

__all__ = ["Hub"]


class Hub:
    """The connected clients' queues and whether the MQTT subscription is in place."""

    def __init__(self) -> None:
        self.queues: set[asyncio.Queue[str]] = set()
        self.subscribed = False

    def publish(self, data: str) -> None:
        for queue in self.queues:
            queue.put_nowait(data)

    async def events(self) -> AsyncIterator[dict[str, str]]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        self.queues.add(queue)
        try:
            while True:
                yield {"event": "message", "data": await queue.get()}
        finally:
            self.queues.discard(queue)

    async def subscribe(self, *, port: int, topic: str) -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier="bench-bare-broadcast") as mqtt:
            await mqtt.subscribe(topic, qos=1)
            self.subscribed = True
            async for message in mqtt.messages:
                payload = message.payload
                self.publish(payload.decode() if isinstance(payload, bytes) else str(payload))


def app(hub: Hub) -> Starlette:
    async def events(request: Request) -> EventSourceResponse:
        return EventSourceResponse(hub.events())

    async def readyz(request: Request) -> Response:
        return Response(status_code=200 if hub.subscribed else 503)

    return Starlette(routes=[Route("/events", events), Route("/readyz", readyz)])


async def _run(*, port: int, mqtt_port: int, topic: str) -> None:
    hub = Hub()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(hub.subscribe(port=mqtt_port, topic=topic))
        tasks.create_task(serve(app(hub), port=port))


def main() -> None:
    parser = arguments(__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--mqtt-port", type=int, required=True)
    parser.add_argument("--topic", required=True)
    args = parser.parse_args()
    run(_run(port=args.port, mqtt_port=args.mqtt_port, topic=args.topic))


if __name__ == "__main__":
    main()
