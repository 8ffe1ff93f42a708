"""aiomqtt's client with flow control: reading from the socket pauses while the beat is behind.

aiomqtt 2.x reads every packet the broker sends into an in-memory queue and, when a bounded
queue is full, drops the message with a log line. Brokers do not reliably bound what they push
(Mosquitto 2.0 was seen sending thousands of unacknowledged QoS 1 messages past the client's
MQTT 5 Receive Maximum), so a fast publisher would either grow that queue without bound or make
it drop. Instead, this client stops reading the socket when ``high`` messages (or ``high_bytes``
of payload) are queued and resumes at ``low`` (and half the bytes): TCP backpressure, the broker
keeps the rest in the session. Nothing is dropped by the client.

This overrides aiomqtt's private ``_on_socket_open`` (pinned aiomqtt==2.5.1): the reader
callback is the same as aiomqtt's, kept here so that it can be removed and added again.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import aiomqtt

__all__ = ["FlowControlledClient"]


def _size(message: aiomqtt.Message) -> int:
    return len(message.payload) if isinstance(message.payload, bytes | bytearray) else 0


class _CountingQueue(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's incoming queue, keeping the total payload bytes it holds (O(1) to read)."""

    nbytes = 0

    def _put(self, item: aiomqtt.Message) -> None:
        self.nbytes += _size(item)
        super()._put(item)

    def _get(self) -> aiomqtt.Message:
        item: aiomqtt.Message = super()._get()
        self.nbytes -= _size(item)
        return item


class FlowControlledClient(aiomqtt.Client):
    def __init__(
        self, *args: Any, high: int, low: int, high_bytes: int = 2**62, **kwargs: Any
    ) -> None:
        super().__init__(*args, queue_type=_CountingQueue, **kwargs)
        self.high = high
        self.low = low
        self.high_bytes = high_bytes
        self.paused = False
        self.pauses = 0
        self._fd = -1

    def _read(self) -> None:
        client = self._client
        try:
            while True:
                client.loop_read()
                sock: Any = client._sock
                if hasattr(sock, "pending") and sock.pending() > 0:
                    continue
                break
        except asyncio.CancelledError:
            # aiomqtt's on_disconnect raises this when the connection attempt was cancelled
            # (a shutdown while connecting): nobody waits for this connection any more
            return
        except Exception as exc:
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)
            return
        if not self.paused and (
            self._queue.qsize() >= self.high or self.queued_bytes() >= self.high_bytes
        ):
            self.paused = True
            self.pauses += 1
            self._loop.remove_reader(self._fd)

    def drain(self, limit: int) -> list[aiomqtt.Message]:
        """Up to ``limit`` more messages that are already queued, without waiting."""
        taken: list[aiomqtt.Message] = []
        while len(taken) < limit and not self._queue.empty():
            taken.append(self._queue.get_nowait())
        return taken

    def queued_bytes(self) -> int:
        """Payload bytes waiting in the queue."""
        return cast(_CountingQueue, self._queue).nbytes

    def resume_if_drained(self) -> None:
        """Call after taking a message: reading resumes once the queue is down to ``low``
        messages and half of ``high_bytes``."""
        drained = self._queue.qsize() <= self.low and self.queued_bytes() <= self.high_bytes // 2
        if self.paused and drained and self._fd > -1:
            self.paused = False
            self._loop.add_reader(self._fd, self._read)

    def _on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        self._fd = sock.fileno()
        self.paused = False

        def create_misc_task() -> None:
            self._misc_task = self._loop.create_task(self._misc_loop())

        self._loop.call_soon_threadsafe(self._loop.add_reader, self._fd, self._read)
        self._loop.call_soon_threadsafe(create_misc_task)

    def _on_socket_close(self, client: Any, userdata: Any, sock: Any) -> None:
        self.paused = False
        self._fd = -1
        super()._on_socket_close(client, userdata, sock)
