"""Retention's start-up sweep asks the database only about the files it found on disk, not for
every row marked deleted (a station that has kept its rows for years has nearly all of them
deleted: at 1 M rows the full read cost 3.4 CPU-s at each start; decision 0120, issue 22)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from fieldstation.clock import VirtualClock
from fieldstation.home import StationHome
from fieldstation.retention import RetentionJob
from fieldstation.retention.job import RetentionReport
from fieldstation.store import Database
from fieldstation.store.models import Recording
from fieldstation.store.retention import mark_deleted


def test_the_sweep_asks_only_about_the_files_found(
    db: Database,
    home: StationHome,
    clock: VirtualClock,
    rows: Any,
    fake_disk: Any,
    make_station: Any,
) -> None:
    gone = [rows.recording(write=False) for _ in range(40)]  # deleted long ago, no file
    leftover = rows.recording()  # marked deleted, then the process died before the unlink
    kept = rows.recording()
    with db.session() as session:
        mark_deleted(session, Recording.id.in_([*gone, leftover]), reason="age", now=clock.now())
    job = RetentionJob(
        make_station(retention={"min_free": 0}), db, home, clock, disk_usage=fake_disk(10**9)
    )
    statements: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        statements.append((sql, params))

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        swept = job._sweep(RetentionReport())
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)

    assert swept == 1
    reads = [(sql, params) for sql, params in statements if "FROM recordings" in sql]
    assert reads, statements
    for sql, params in reads:  # by the paths of the two files found, never all deleted rows
        assert "recordings.path IN" in sql, sql
        assert len(params) == 2, params
    with db.session() as session:
        assert session.get(Recording, kept) is not None
