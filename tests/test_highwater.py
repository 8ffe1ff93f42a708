"""The high-water mark beside the database: where a log continues after each kind of stop or
loss (common.highwater.recover), and the mark file itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.highwater import Mark, MarkUnreadable, boot_id, read_mark, recover, write_mark

GEN = "0123456789abcdef"


def mark(committed: int, reserved: int, *, clean: bool, boot: str | None = None) -> Mark:
    return Mark(GEN, committed, reserved, clean, boot_id() if boot is None else boot)


def test_a_new_log_and_a_log_from_before_marks_trust_the_database() -> None:
    assert (
        recover(mark=None, db_generation=None, db_head=0, wal_present=False, durable=False).head
        == 0
    )
    old = recover(mark=None, db_generation=None, db_head=42, wal_present=True, durable=False)
    assert (old.head, old.kind) == (42, None)


def test_a_clean_stop_continues_where_it_stopped() -> None:
    found = recover(mark=mark(7, 7, clean=True), db_generation=GEN, db_head=7, wal_present=False,
                    durable=False)  # fmt: skip
    assert (found.head, found.kind) == (7, None)


def test_a_process_crash_with_the_wal_in_place_loses_nothing_and_skips_nothing() -> None:
    found = recover(mark=mark(5, 10_005, clean=False), db_generation=GEN, db_head=9,
                    wal_present=True, durable=False)  # fmt: skip
    assert (found.head, found.kind) == (9, None)


@pytest.mark.parametrize(
    ("why", "options"),
    [
        ("WAL file is missing", {"wal_present": False, "durable": False}),
        ("machine restarted", {"wal_present": True, "durable": False, "boot": "another-boot"}),
    ],
)
def test_an_unclean_stop_that_may_have_lost_commits_skips_the_reserved_block(
    why: str, options: dict[str, object]
) -> None:
    boot = str(options.pop("boot", boot_id()))
    found = recover(mark=mark(5, 10_005, clean=False, boot=boot), db_generation=GEN, db_head=9,
                    **options)  # type: ignore[arg-type]  # fmt: skip
    assert (found.head, found.low, found.high, found.kind) == (10_005, 9, 10_005, "skipped")
    assert why in found.reason


def test_a_machine_restart_with_fsynced_commits_trusts_the_database() -> None:
    found = recover(mark=mark(5, 10_005, clean=False, boot="before"), db_generation=GEN,
                    db_head=9, wal_present=True, durable=True)  # fmt: skip
    assert (found.head, found.kind) == (9, None)


@pytest.mark.parametrize(
    ("generation", "db_head", "why"),
    [
        (GEN, 4000, "behind the high-water mark"),  # a lost WAL, a restored backup
        (None, 0, "replaced or recreated"),  # a zero-length or deleted database file
    ],
)
def test_a_database_behind_its_mark_lost_events_and_never_reuses_them(
    generation: str | None, db_head: int, why: str
) -> None:
    found = recover(mark=mark(6003, 16_000, clean=False), db_generation=generation,
                    db_head=db_head, wal_present=True, durable=False)  # fmt: skip
    assert (found.head, found.low, found.high, found.kind) == (16_000, db_head, 16_000, "lost")
    assert why in found.reason and "6003" in found.reason


def test_a_replaced_database_that_is_not_behind_continues_above_the_mark() -> None:
    found = recover(mark=mark(10, 10, clean=True), db_generation="another", db_head=12,
                    wal_present=False, durable=False)  # fmt: skip
    assert (found.head, found.kind) == (12, None)
    found = recover(mark=mark(10, 20, clean=False), db_generation="another", db_head=12,
                    wal_present=True, durable=False)  # fmt: skip
    assert (found.head, found.kind) == (20, "skipped")


def test_the_mark_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "log.db.hwm"
    assert read_mark(path) is None
    write_mark(path, mark(1, 10, clean=False))
    write_mark(path, mark(2, 20, clean=True))
    assert read_mark(path) == mark(2, 20, clean=True)
    assert [p.name for p in tmp_path.iterdir()] == ["log.db.hwm"]  # no temporary file left


@pytest.mark.parametrize(
    "text",
    ["", "{", '{"version": 9}', '{"version": 1, "generation": "g"}',
     '{"version": 1, "generation": "g", "committed": 5, "reserved": 1, "clean": false}'],
)  # fmt: skip
def test_a_mark_that_is_not_one_is_reported(tmp_path: Path, text: str) -> None:
    path = tmp_path / "log.db.hwm"
    path.write_text(text)
    with pytest.raises(MarkUnreadable):
        read_mark(path)
