"""Events the database refuses (a full disk: "database or disk is full") are kept in memory,
bounded, and written with their own time once the database takes writes again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from fieldstation.store import Database, open_database
from fieldstation.store.events import EventBacklog
from fieldstation.store.models import Event, Message
from fieldstation.testing.disk import fill_disk


@pytest.fixture
def full_disk_db(small_disk: Path) -> Iterator[tuple[Database, Path]]:
    """A migrated database on a 20 MB filesystem, and the path of a filler file to fill it."""
    db = open_database(small_disk / "station.db")
    try:
        yield db, small_disk / "filler"
    finally:
        db.dispose()


def kinds(db: Database) -> list[tuple[str, datetime]]:
    with db.session() as session:
        return [(e.kind, e.created_at) for e in session.scalars(select(Event).order_by(Event.id))]


def test_events_refused_by_a_full_database_are_written_when_space_returns(
    full_disk_db: tuple[Database, Path],
) -> None:
    db, filler = full_disk_db
    backlog = EventBacklog(db, station_id="s", destinations=["local"], limit=3)
    t0 = datetime(2026, 6, 1, tzinfo=UTC)
    assert backlog.record(kind="first", source="test", message="before", now=t0)
    fill_disk(filler)
    for n in range(4):  # refused; the limit keeps the newest 3
        kept = backlog.record(
            kind=f"job_failed_{n}",
            source="supervisor",
            message=f"failure {n}",
            now=t0 + timedelta(seconds=n + 1),
            severity="error",
        )
        assert kept is False
    assert backlog.pending == 3 and backlog.dropped == 1
    assert not backlog.flush()  # still full
    filler.unlink()
    assert backlog.flush() and backlog.pending == 0
    found = kinds(db)
    assert [k for k, _ in found] == ["first", "job_failed_1", "job_failed_2", "job_failed_3"]
    assert [t.replace(tzinfo=UTC) for _, t in found][1:] == [
        t0 + timedelta(seconds=s) for s in (2, 3, 4)
    ]
    with db.session() as session:  # each one enqueued for delivery too
        messages = session.scalars(select(Message).where(Message.kind == "event")).all()
    assert len(messages) == 4
    with db.engine.connect() as con:
        assert con.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"


def test_an_event_that_cannot_be_stored_is_dropped_and_blocks_nothing(
    full_disk_db: tuple[Database, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """An event kept behind a refused one, which then fails for another reason (its data is
    not JSON), is dropped and logged once; the events before and after it are written, and
    neither ``record`` nor ``flush`` raises (the status thread calls ``flush``)."""
    db, filler = full_disk_db
    backlog = EventBacklog(db, station_id="s", destinations=["local"])
    t0 = datetime(2026, 6, 1, tzinfo=UTC)
    fill_disk(filler)
    assert backlog.record(kind="before", source="test", message="a", now=t0) is False
    bad = {"when": t0}  # a datetime: not JSON
    assert backlog.record(kind="bad", source="test", message="b", now=t0, data=bad) is False
    assert backlog.record(kind="after", source="test", message="c", now=t0) is False
    assert backlog.pending == 3 and not backlog.flush()
    filler.unlink()
    assert backlog.flush() and backlog.pending == 0 and backlog.failed == 1
    assert backlog.record(kind="later", source="test", message="d", now=t0)
    assert [k for k, _ in kinds(db)] == ["before", "after", "later"]
    dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 1 and "bad" in dropped[0].getMessage()
    # on a database that takes writes, such an event is dropped at once, not raised
    assert backlog.record(kind="bad", source="test", message="e", now=t0, data=bad) is False
    assert backlog.pending == 0 and backlog.failed == 2
