"""The gateway's memory bounded in bytes, over real HTTP: ring, client queues, replays.

Large events (64 KiB to 1 MiB) and stalled clients (raw sockets with a tiny receive buffer that
stop reading); the count bounds are set far away so that only the byte bounds can act.
"""

from __future__ import annotations

import asyncio
import socket
import tracemalloc
from pathlib import Path

from gateway.service import Gateway
from tests.gateway.support import beat_named, gateway_settings, run_gateway
from tests.support import eventually, make_events, read_sse, run_beat, stalled_socket
from tests.test_memory_bounds import MIB, read_all, sequences, settled_growth, sse_ids


def _ring_ok(gateway: Gateway, head: int) -> bool:
    return any(u.head == head for u in gateway.pool.all())


async def test_a_stalled_client_overflows_by_bytes_and_resumes_without_gap(
    tmp_path: Path,
) -> None:
    beat = beat_named(tmp_path, "test")
    settings = gateway_settings(
        {"test": beat}, client_queue_size=100_000, client_queue_bytes=MIB, ring_bytes=4 * MIB
    )
    total = 200
    async with run_beat(beat), run_gateway(settings) as (gateway, base):
        stalled = stalled_socket(settings.port, "/streams/test")
        await eventually(lambda: len(gateway.clients) == 1, what="the stalled client")
        await eventually(lambda: _ring_ok(gateway, 0), what="the upstream")
        fast = asyncio.create_task(sequences(f"{base}/streams/test", count=total))
        for first in range(0, total, 4):
            await beat.pipeline.commit(make_events(4, start=first, pad=64 * 1024))
        await eventually(lambda: gateway.metrics.overflow._value.get() >= 1, what="overflow")
        raw = await asyncio.to_thread(read_all, stalled)
        stalled.close()
        received = sse_ids(raw)
        rest = await read_sse(
            f"{base}/streams/test", count=total - len(received),
            headers={"Last-Event-ID": str(received[-1])}, timeout=30,
        )  # fmt: skip
        assert await fast == list(range(1, total + 1))
    assert b": overflow, reconnect with Last-Event-ID to resume\nretry: 500" in raw
    assert received == list(range(1, len(received) + 1))
    assert len(received) < total // 2
    assert [int(m.id) for m in rest] == list(range(len(received) + 1, total + 1))


async def test_the_ring_is_bounded_in_bytes_and_still_holds_every_event_after_its_base(
    tmp_path: Path,
) -> None:
    """100 events of 64 KiB through a 2 MiB ring: it keeps the newest ones only, each of them,
    and replays from it and from the beat meet without a gap."""
    beat = beat_named(tmp_path, "test")
    settings = gateway_settings({"test": beat}, ring_size=100_000, ring_bytes=2 * MIB)
    async with run_beat(beat), run_gateway(settings) as (gateway, base):
        keeper = asyncio.create_task(read_sse(f"{base}/streams/test", count=100, timeout=30))
        await eventually(lambda: _ring_ok(gateway, 0), what="the upstream")
        for first in range(0, 100, 5):
            await beat.pipeline.commit(make_events(5, start=first, pad=64 * 1024))
        await eventually(lambda: _ring_ok(gateway, 100), what="every event in the gateway")
        (upstream,) = gateway.pool.all()
        kept = [frame.seq for frame in upstream.ring]
        assert upstream.ring_held <= 2 * MIB
        assert upstream.ring_held == sum(frame.size for frame in upstream.ring)
        assert upstream.ring_base is not None and 80 < upstream.ring_base < 100
        assert kept == list(range(upstream.ring_base + 1, 101))
        ring_replays = gateway.metrics.replays.labels("ring")._value.get()
        from_ring = await read_sse(
            f"{base}/streams/test?last_event_id={upstream.ring_base}", count=len(kept)
        )  # nothing more is committed: this one is served from the ring alone
        await eventually(lambda: len(gateway.clients) == 1, what="the ring reader gone")
        from_beat = await read_sse(f"{base}/streams/test?last_event_id=0", count=100, timeout=30)
        assert [int(m.id) for m in await keeper] == list(range(1, 101))
    assert gateway.metrics.replays.labels("ring")._value.get() == ring_replays + 1
    assert [int(m.id) for m in from_ring] == kept
    assert [int(m.id) for m in from_beat] == list(range(1, 101))


async def test_stalled_replays_through_the_gateway_hold_about_their_queue_each(
    tmp_path: Path,
) -> None:
    """Three ``?last_event_id=0`` clients of 30 events of 1 MiB stop reading: the gateway reads
    the beat only as fast as each client's queue drains, so gateway and beat together hold
    about one queue, one chunk and one page per client, not the log."""
    clients, events = 3, 30
    beat = beat_named(tmp_path, "test", sse_send_timeout=120)
    settings = gateway_settings({"test": beat}, client_queue_bytes=4 * MIB, sse_send_timeout=120)
    async with run_beat(beat), run_gateway(settings) as (gateway, base):
        for first in range(0, events, 3):
            await beat.pipeline.commit(make_events(3, start=first, pad=MIB))
        tracemalloc.start()
        try:
            start, _ = tracemalloc.get_traced_memory()
            stalled = [
                stalled_socket(settings.port, "/streams/test?last_event_id=0")
                for _ in range(clients)
            ]
            growth = await settled_growth(start, ready=lambda: len(gateway.clients) == clients)
        finally:
            tracemalloc.stop()
        queued = [client.out_bytes for client in gateway.clients]
        assert len(gateway.clients) == clients  # stalled, not dropped
        for sock in stalled:
            sock.close()
        replayed = await read_sse(f"{base}/streams/test?last_event_id=0", count=events)
    print(f"3 stalled gateway replays of 30 x 1 MiB: {growth / MIB:.1f} MiB traced, {queued=}")
    assert [int(m.id) for m in replayed] == list(range(1, events + 1))
    assert all(size <= 2 * MIB + 3 * MIB for size in queued)  # half the queue + one frame
    assert growth < clients * 16 * MIB, f"{growth / MIB:.1f} MiB for {clients} stalled clients"


def _read_ids(sock: socket.socket, count: int) -> tuple[list[int], bytes]:
    """Read a stalled client's stream (it starts reading now) until ``count`` ids came."""
    raw = b""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # a 4 KiB window crawls
    sock.settimeout(30)
    last = b"\nid: %d\n" % count
    while last not in raw[-(1 << 20) :] and (chunk := sock.recv(1 << 20)):
        raw += chunk
    return sse_ids(raw), raw


async def test_a_slow_replay_the_beat_cut_off_is_resumed_not_failed(tmp_path: Path) -> None:
    """The gateway reads a replay from the beat only as fast as its client takes it; live
    events meanwhile overflow that read's buffer on the beat, which ends it. The gateway
    resumes the read from where it stopped: its client sees one stream, without gap."""
    before, live = 100, 200
    beat = beat_named(tmp_path, "test", sse_queue_size=100_000, sse_queue_bytes=MIB)
    settings = gateway_settings({"test": beat}, client_queue_bytes=MIB)
    async with run_beat(beat), run_gateway(settings) as (gateway, _):
        await beat.pipeline.commit(make_events(before, pad=64 * 1024))
        slow = stalled_socket(settings.port, "/streams/test?last_event_id=0")
        await eventually(lambda: len(gateway.clients) == 1, what="the slow client")
        for first in range(before, before + live, 4):
            await beat.pipeline.commit(make_events(4, start=first, pad=64 * 1024))
        await eventually(lambda: beat.metrics.sse_overflow._value.get() >= 1, what="overflow")
        received, raw = await asyncio.to_thread(_read_ids, slow, before + live)
        slow.close()
        assert gateway.metrics.overflow._value.get() == 0
    assert received == list(range(1, before + live + 1))
    assert b"unreachable" not in raw and b"overflow" not in raw
