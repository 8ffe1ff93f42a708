"""The high-water mark beside the database: sequences are never issued twice.

The event log's own ``high_water`` lives in the database, so losing the database file, its WAL,
or the last commits before a power loss (``--log-sync normal``) would take it back and the log
would hand out sequences that SSE clients and Kafka consumers already hold. The *mark* is a
small JSON file next to the database (``<name>.db.hwm``) that the log keeps ahead of itself:

* ``reserved``: no sequence above it has ever been issued. Before a commit would go past it,
  the writer moves it :data:`RESERVE` further, durably, first;
* ``committed``: a head the database is known to have reached (updated with each reservation,
  at most once a second while events are committed, and at a clean close);
* ``clean``: the log was closed cleanly at ``committed``, and ``reserved`` equals it;
* ``generation``: a random name, also stored in the database, telling a replaced or recreated
  database from the one the mark describes;
* ``boot``: the machine's boot id when the mark was written, telling a crash of the process
  (the operating system still had every commit) from a crash or power loss of the machine.

The file is replaced atomically and durably (written to a temporary file, fsynced, renamed over
the old one, directory fsynced), so a crash leaves the old mark or the new one, never a torn one
(Kafka's ``CheckpointFile``, PostgreSQL's ``durable_rename``).

:func:`recover` decides, at open, where the log continues (see its docstring).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["RESERVE", "Mark", "MarkUnreadable", "Recovery", "read_mark", "recover", "write_mark"]

RESERVE = 10_000
"""How far ahead of the head the mark reserves sequences (one durable write per block)."""
_VERSION = 1


def boot_id() -> str:
    """This boot of the machine (Linux), or ``""`` where it cannot be known."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True, slots=True)
class Mark:
    generation: str
    committed: int
    reserved: int
    clean: bool
    boot: str = ""

    @classmethod
    def new(cls, head: int = 0) -> Mark:
        return cls(secrets.token_hex(8), head, head, clean=True, boot=boot_id())


class MarkUnreadable(ValueError):
    """The mark file exists but is not a mark (the message says why)."""


def mark_path(database: Path) -> Path:
    return database.with_name(database.name + ".hwm")


def read_mark(path: Path) -> Mark | None:
    """The mark at ``path``; ``None`` when there is no file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        raw = json.loads(text)
        if raw.get("version") != _VERSION:
            raise MarkUnreadable(f"{path}: unknown version {raw.get('version')!r}")
        mark = Mark(
            str(raw["generation"]),
            int(raw["committed"]),
            int(raw["reserved"]),
            raw["clean"],
            str(raw.get("boot", "")),
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise MarkUnreadable(f"{path}: not a high-water mark ({exc})") from None
    if not isinstance(mark.clean, bool) or not 0 <= mark.committed <= mark.reserved:
        raise MarkUnreadable(f"{path}: inconsistent high-water mark {raw}")
    return mark


def write_mark(path: Path, mark: Mark) -> None:
    """Replace the mark atomically and durably (see the module docstring)."""
    body = {"version": _VERSION, **{k: getattr(mark, k) for k in Mark.__slots__}}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as file:
        file.write(json.dumps(body))
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


RangeKind = Literal["lost", "skipped"]


@dataclass(frozen=True, slots=True)
class Recovery:
    """Where the log continues, and the range of sequences it gives up (if any).

    ``kind`` ``lost``: there is evidence that events in ``(low, high]`` were committed and are
    gone (resumed SSE clients get a ``beats.gap`` for it). ``skipped``: the log stopped
    uncleanly; sequences in the range may or may not have been issued, and none is issued again.
    """

    head: int
    generation: str
    low: int = 0
    high: int = 0
    kind: RangeKind | None = None
    reason: str = ""


def recover(
    *,
    mark: Mark | None,
    db_generation: str | None,
    db_head: int,
    wal_present: bool,
    durable: bool,
) -> Recovery:
    """Decide where a log whose database holds ``db_head`` continues, given its mark.

    * no mark: a new log, or one made before marks existed: the database is all there is;
    * the database is behind ``committed``: commits were lost (a lost WAL, a restored backup,
      a database emptied or recreated): the range up to ``reserved`` is *lost*;
    * a different generation otherwise (the database was replaced): continue above
      ``reserved`` (*skipped*);
    * an unclean stop of the process on the same boot, with the WAL in place: the operating
      system kept every commit, the database is exact, nothing is skipped (``kill -9``);
    * an unclean stop with the WAL missing, or followed by a restart of the machine while
      commits were not fsynced (``durable`` false: ``--log-sync normal``): the last commits may
      be gone without a trace, so the log continues above ``reserved`` (*skipped*).
    """
    if mark is None:
        return Recovery(db_head, db_generation or Mark.new().generation)
    same = db_generation == mark.generation
    high = max(mark.reserved, db_head)
    if db_head < mark.committed:
        why = "the database is behind the high-water mark"
        if not same:
            why = "the database was replaced or recreated"
        reason = f"{why}: it holds up to {db_head}, the mark says {mark.committed} were committed"
        return Recovery(high, mark.generation, db_head, high, "lost", reason)
    if not same:
        reason = "the database was replaced by another one"
    elif mark.clean:
        return Recovery(db_head, mark.generation)
    elif not wal_present:
        reason = "the WAL file is missing after an unclean stop"
    elif mark.boot != boot_id() and not durable:
        reason = "the machine restarted after an unclean stop (--log-sync normal)"
    else:
        return Recovery(db_head, mark.generation)
    if high == db_head:
        return Recovery(db_head, mark.generation)
    reason += f"; sequences up to {high} may have been issued"
    return Recovery(high, mark.generation, db_head, high, "skipped", reason)
