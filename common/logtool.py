"""``beats log info|check|repair --data-dir DIR``: the operator's tools for a beat's event log.

* ``info`` prints what the log holds (JSON): sequences, channels, cursors, the high-water mark,
  the ranges given up at recoveries. It opens the database read-only and can run beside the beat.
* ``check`` runs SQLite's full ``integrity_check`` and compares the database with its high-water
  mark; exit status 0 when all is well, 1 when a problem was found (each printed on a line).
* ``repair`` (with the beat stopped) copies every readable event, cursor and setting into a new
  database, records the unreadable sequences as a *lost* range (resuming clients are told), keeps
  the damaged files beside it as ``<name>.db.damaged-<time>`` and puts the new one in place.
  Sequences continue above the old high-water mark: none is issued twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import Field

from common.highwater import MarkUnreadable, mark_path, read_mark
from common.logdb import _INSERT, _SCHEMA, _SET_CURSOR, _SET_META, integrity
from common.settings import CommandSettings

__all__ = ["LogToolSettings", "check", "damage", "info", "repair"]

_CHUNK = 1000


class LogToolSettings(CommandSettings):
    """Inspect, check or repair the event log(s) in a beat's data directory."""

    data_dir: Path = Field(Path("data"), description="The beat's data directory (--data-dir).")


def _logs(data_dir: Path) -> list[Path]:
    found = sorted(data_dir.glob("*.db"))
    if not found:
        raise SystemExit(f"beats log: no event log (*.db) in {data_dir}")
    return found


def _readonly(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _mark(path: Path) -> dict[str, Any] | str | None:
    try:
        mark = read_mark(mark_path(path))
    except MarkUnreadable as exc:
        return str(exc)
    return None if mark is None else {k: getattr(mark, k) for k in mark.__slots__}


def info(path: Path) -> dict[str, Any]:
    """What the log at ``path`` holds."""
    report: dict[str, Any] = {"path": str(path), "bytes": path.stat().st_size}
    wal = path.with_name(path.name + "-wal")
    report["wal_bytes"] = wal.stat().st_size if wal.exists() else None
    report["mark"] = _mark(path)
    try:
        conn = _readonly(path)
        meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        count, low, high = conn.execute(
            "SELECT COUNT(*), MIN(seq), MAX(seq) FROM events"
        ).fetchone()
        channels = conn.execute("SELECT channel, COUNT(*) FROM events GROUP BY channel")
        report["events"] = {"count": count, "oldest": low, "newest": high}
        report["channels"] = dict(channels.fetchall())
        report["cursors"] = dict(conn.execute("SELECT name, value FROM cursors").fetchall())
        report["high_water"] = int(meta.get("high_water", 0))
        report["purged_through"] = int(meta.get("purged_through", 0))
        report["generation"] = meta.get("generation")
        report["ranges"] = json.loads(meta.get("ranges", "[]"))
        conn.close()
    except sqlite3.DatabaseError as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
    return report


def check(path: Path) -> list[str]:
    """The problems of the log at ``path`` (``[]``: none)."""
    problems = damage(path)
    if problems:
        return problems
    try:
        mark = read_mark(mark_path(path))
    except MarkUnreadable as exc:
        return [str(exc)]
    if mark is None:
        return []
    conn = _readonly(path)
    meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
    conn.close()
    head = int(meta.get("high_water", 0))
    if meta.get("generation") != mark.generation:
        problems.append(f"{path}: not the database its high-water mark describes")
    if head < mark.committed:
        problems.append(f"{path}: holds up to {head}, its mark says {mark.committed} were "
                        "committed: events were lost (the beat will say so at start)")  # fmt: skip
    return problems


def damage(path: Path) -> list[str]:
    """What ``integrity_check`` finds wrong with the database file (``[]``: nothing)."""
    try:
        conn = _readonly(path)
        problems = integrity(conn, full=True)
        conn.close()
    except sqlite3.DatabaseError as exc:
        return [f"{path}: {exc}"]
    return [f"{path}: {problem}" for problem in problems]


def repair(path: Path) -> dict[str, Any]:
    """Copy what is readable into a new database and put it in place (see the module)."""
    fresh = path.with_name(path.name + ".repair")
    fresh.unlink(missing_ok=True)
    try:
        mark = read_mark(mark_path(path))
    except MarkUnreadable:
        mark = None
    work = _working_copy(path)
    src = _readonly(work)
    dst = sqlite3.connect(fresh, isolation_level=None)
    dst.executescript(_SCHEMA)
    meta, cursors = _readable(src, "meta"), _readable(src, "cursors")
    if mark is not None:
        meta.setdefault("generation", mark.generation)
    top = max(int(meta.get("high_water", 0)), _max_seq(src), mark.reserved if mark else 0)
    dst.execute("BEGIN")
    copied, lost = _salvage(src, dst, top, int(meta.get("purged_through", 0)))
    ranges = json.loads(meta.get("ranges", "[]")) + [[low, high, "lost"] for low, high in lost]
    meta.update(high_water=str(top), ranges=json.dumps(ranges))
    dst.executemany(_SET_META, meta.items())
    dst.executemany(_SET_CURSOR, cursors.items())
    dst.execute("COMMIT")
    dst.close()
    src.close()
    for extra in ("", "-wal", "-shm"):
        work.with_name(work.name + extra).unlink(missing_ok=True)
    aside = _move_aside(path)
    fresh.rename(path)
    return {"path": str(path), "copied": copied, "lost": lost, "damaged_kept_as": aside}


def _working_copy(path: Path) -> Path:
    """A copy of the database (and its WAL) to read from, padded with empty pages to the size
    its header states: a truncated file's schema then loads, and what remains is readable."""
    work = path.with_name(path.name + ".salvage")
    for extra in ("", "-wal"):
        source = path.with_name(path.name + extra)
        if source.exists():
            shutil.copyfile(source, work.with_name(work.name + extra))
    header = work.read_bytes()[:100]
    if len(header) == 100 and header.startswith(b"SQLite format 3\x00"):
        (page_size,) = struct.unpack(">H", header[16:18])
        (pages,) = struct.unpack(">I", header[28:32])
        size = (65536 if page_size == 1 else page_size) * pages
        if work.stat().st_size < size:
            os.truncate(work, size)
    return work


def _readable(src: sqlite3.Connection, table: str) -> dict[str, str]:
    try:
        return dict(src.execute(f"SELECT name, value FROM {table}").fetchall())
    except sqlite3.DatabaseError:
        return {}


def _max_seq(src: sqlite3.Connection) -> int:
    try:
        return int(src.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])
    except sqlite3.DatabaseError:
        return 0


def _salvage(
    src: sqlite3.Connection, dst: sqlite3.Connection, top: int, purged: int
) -> tuple[int, list[tuple[int, int]]]:
    """Copy every readable event up to ``top``; the unreadable sequences as ranges (low, high].
    In a part of the table that cannot be read whole, a sequence that is not found is counted
    unreadable too (it may sit on a page that is gone)."""
    copied, unreadable = 0, list[int]()
    for low in range(purged, top, _CHUNK):
        high = min(low + _CHUNK, top)
        try:
            rows = src.execute(
                "SELECT * FROM events WHERE seq > ? AND seq <= ? ORDER BY seq", (low, high)
            ).fetchall()
            if not all(map(_intact, rows)):
                raise sqlite3.DatabaseError("a row's content is damaged")
        except sqlite3.DatabaseError:
            rows = list(_one_by_one(src, low, high, unreadable))
        dst.executemany(_INSERT, rows)
        copied += len(rows)
    return copied, _ranges(unreadable)


def _one_by_one(
    src: sqlite3.Connection, low: int, high: int, unreadable: list[int]
) -> Iterator[tuple[Any, ...]]:
    for seq in range(low + 1, high + 1):
        try:
            row = src.execute("SELECT * FROM events WHERE seq = ?", (seq,)).fetchone()
        except sqlite3.DatabaseError:
            unreadable.append(seq)
            continue
        if row is None or not _intact(row):
            unreadable.append(seq)
        else:
            yield row


def _intact(row: tuple[Any, ...]) -> bool:
    """Whether a salvaged row is what the log wrote: its body is the JSON of the event with
    this id and sequence (a page cut short or zeroed reads back without an SQLite error)."""
    seq, event_id, *_, body = row
    try:
        event = json.loads(bytes(body))
    except (ValueError, TypeError):
        return False
    return isinstance(event, dict) and event.get("id") == event_id and event.get("sequence") == seq


def _ranges(seqs: list[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for seq in seqs:
        if ranges and ranges[-1][1] == seq - 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq - 1, seq))
    return ranges


def _move_aside(path: Path) -> str:
    suffix = time.strftime(".damaged-%Y%m%dT%H%M%S")
    for extra in ("", "-wal", "-shm"):
        part = path.with_name(path.name + extra)
        if part.exists():
            part.rename(path.with_name(path.name + suffix + extra))
    return str(path.with_name(path.name + suffix))


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2))


async def main_info(settings: LogToolSettings, shutdown: asyncio.Event) -> None:
    _print([info(path) for path in _logs(settings.data_dir)])


async def main_check(settings: LogToolSettings, shutdown: asyncio.Event) -> None:
    problems = [problem for path in _logs(settings.data_dir) for problem in check(path)]
    for problem in problems:
        print(problem)
    if problems:
        raise SystemExit(1)
    print(f"ok: {settings.data_dir}")


async def main_repair(settings: LogToolSettings, shutdown: asyncio.Event) -> None:
    for path in _logs(settings.data_dir):
        if not damage(path):
            print(f"ok, nothing to repair: {path}")
            continue
        print(json.dumps(repair(path)), file=sys.stdout)
