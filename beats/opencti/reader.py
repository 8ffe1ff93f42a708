"""Reading the OpenCTI stream with a bound on every frame's size.

httpx-sse keeps a line in memory until its end arrives, so one endless ``data:`` line would take
all of it. :func:`read_frames` splits the response's bytes into lines itself, keeps at most
``max_line`` bytes of any line (a longer one is cut: its first 64 KiB are kept for the dead
letter, the rest is read and dropped as it arrives), and hands each line to httpx-sse's own
decoder (:class:`httpx_sse.SSEDecoder`, SSE's field rules). A frame with a cut line comes out
as a :class:`~beats.opencti.frames.Frame` whose ``oversize`` is the line's full size: the
normaliser rejects it, the source dead-letters it and goes on with the stream.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx_sse._decoders import SSEDecoder  # the field rules of SSE; private: httpx-sse pinned

from beats.opencti.frames import Frame

__all__ = ["read_frames"]

_KEPT = 64 * 1024


async def read_frames(response: httpx.Response, *, max_line: int) -> AsyncIterator[Frame]:
    """The frames of an SSE ``response`` (see the module docstring)."""
    decoder = SSEDecoder()
    cut: _Line | None = None
    async for line in _lines(response.aiter_bytes(), max_line):
        if line.size > max_line:
            cut = line
        sse = decoder.decode(bytes(line.kept).decode("utf-8", "replace"))
        if sse is not None:
            if cut is None:
                yield Frame(sse.event, sse.id, sse.data)
            else:
                yield Frame(sse.event, sse.id, sse.data, oversize=cut.value_size,
                            digest=cut.digest())  # fmt: skip
            cut = None


class _Line:
    """One line as it arrives: its first bytes (all of them while within ``max_line``, else
    64 KiB), its size, and for a cut line the SHA-256 of its value (after ``field:``)."""

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self.kept = bytearray()
        self.size = 0
        self.value_size = 0
        self._hash: Any = None

    def add(self, part: bytes) -> None:
        self.size += len(part)
        if self.size <= self.max_line:
            self.kept += part
            return
        if self._hash is None:
            self.kept += part
            colon = self.kept.find(b":")
            start = colon + 1 + (self.kept[colon + 1 : colon + 2] == b" ") if colon >= 0 else 0
            self.value_size = len(self.kept) - start
            self._hash = hashlib.sha256(self.kept[start:])
            del self.kept[_KEPT:]
            return
        self.value_size += len(part)
        self._hash.update(part)

    def digest(self) -> str:
        return self._hash.hexdigest() if self._hash is not None else ""


async def _lines(chunks: AsyncIterator[bytes], max_line: int) -> AsyncIterator[_Line]:
    """The lines of a byte stream, without their end (``\n``, ``\r\n`` or ``\r``)."""
    line = _Line(max_line)
    pending_cr = False
    async for chunk in chunks:
        start = 1 if pending_cr and chunk.startswith(b"\n") else 0
        pending_cr = False
        ends = _Ends(chunk)
        while (end := ends.after(start)) >= 0:
            line.add(chunk[start:end])
            yield line
            line = _Line(max_line)
            if chunk[end : end + 1] == b"\r":
                if end + 1 == len(chunk):
                    pending_cr = True
                elif chunk[end + 1 : end + 2] == b"\n":
                    end += 1
            start = end + 1
        line.add(chunk[start:])
    if line.kept or line.size:
        yield line


class _Ends:
    """The line ends of one chunk, found in order: each kind (``\n``, ``\r``) is searched
    for again only once passed, so a chunk of many lines is scanned once, not once a line."""

    def __init__(self, chunk: bytes) -> None:
        self.chunk = chunk
        self.lf = chunk.find(b"\n")
        self.cr = chunk.find(b"\r")

    def after(self, start: int) -> int:
        """The first line end at or after ``start``, or -1."""
        if 0 <= self.lf < start:
            self.lf = self.chunk.find(b"\n", start)
        if 0 <= self.cr < start:
            self.cr = self.chunk.find(b"\r", start)
        return min((i for i in (self.lf, self.cr) if i >= 0), default=-1)
