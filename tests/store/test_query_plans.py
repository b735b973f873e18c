"""The hot queries of a running station read an index, never the whole of ``recordings`` or
``detections`` (issue 22; decision 0120): their cost stays flat as the archive grows.

Each query is compiled by SQLAlchemy exactly as the station runs it (``claim_next``'s cached
UPDATE, ``list_recordings``' page ...), captured at execution, and explained with SQLite's
``EXPLAIN QUERY PLAN`` on a database migrated to head holding a few rows. The station never
runs ``ANALYZE``, so these plans, made without statistics, are the plans it runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from fieldstation.store import Database, open_database
from fieldstation.store.deployments import start_deployment
from fieldstation.store.health import (
    outbox_depth,
    pending_recordings_before,
    recordings_in_period,
)
from fieldstation.store.processing import claim_next, count_pending
from fieldstation.store.recordings import insert_recording, unconfirmed_paths
from fieldstation.store.retention import (
    Protection,
    deletable,
    list_detections,
    list_recordings,
)

NOW = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)
BIG_TABLES = ("recordings", "detections")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "station.db")
    with database.session() as session:
        deployment = start_deployment(
            session, station_id="s", config_hash="h", config={}, version="t", now=NOW
        )
        for i in range(20):
            insert_recording(
                session,
                deployment_id=deployment.id,
                sensor="mic",
                path=f"data/mic/{i}.flac",
                session_id="x",
                chunk_index=i,
                start_frame=i * 48000,
                started_at=NOW - timedelta(minutes=20 - i),
                duration=60.0,
                rate=48000,
                channels=1,
                frames=48000 * 60,
                bytes=1000,
                sha256="0" * 64,
                format="flac",
                end_reason="duration",
                created_at=NOW,
                state="processed" if i < 15 else "recorded",
            )
    yield database
    database.dispose()


@contextmanager
def captured(db: Database) -> Iterator[list[tuple[str, Any]]]:
    """Every (SQL, parameters) the block executes on ``db`` (both its connection pools)."""
    statements: list[tuple[str, Any]] = []

    def listen(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        if sql.lstrip().upper().startswith(("SELECT", "UPDATE", "WITH")):
            statements.append((sql, params))

    engines = [db.engine]
    with db.session(durable=False):
        pass  # make the light engine
    if db._light_engine is not None:
        engines.append(db._light_engine)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", listen)
    try:
        yield statements
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", listen)


def plan(db: Database, sql: str, params: Any) -> list[str]:
    """The lines of SQLite's query plan of ``sql``."""
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        return [str(row[3]) for row in cursor.fetchall()]
    finally:
        raw.close()


def full_scans(lines: list[str]) -> list[str]:
    """Plan lines that read a whole big table: ``SCAN recordings`` (or an alias of it) without
    an index. ``SCAN t USING INDEX`` walks a whole index too, so it counts as well unless it is
    a covering index of a row-limited walk, which the tests judge case by case."""
    bad = []
    for line in lines:
        m = re.match(r"SCAN (\w+)( AS \w+)?(.*)$", line)
        if m and m.group(1) in BIG_TABLES and "INDEX" not in m.group(3):
            bad.append(line)
    return bad


def explain(db: Database, action: Callable[[Any], Any]) -> list[list[str]]:
    """Run ``action(session)`` and return the plan of every statement it executed."""
    with captured(db) as statements, db.session(durable=False) as session:
        action(session)
    assert statements, "the action ran no query"
    return [plan(db, sql, params) for sql, params in statements]


def assert_no_full_scan(db: Database, action: Callable[[Any], Any]) -> list[list[str]]:
    plans = explain(db, action)
    for lines in plans:
        assert not full_scans(lines), lines
    return plans


def test_the_check_itself_sees_a_full_scan(db: Database) -> None:
    """The helper is not blind: a count over an unindexed column is a full scan."""
    lines = plan(db, "SELECT count(*) FROM recordings WHERE bytes > 5", ())
    assert full_scans(lines) == [lines[0]]
    assert full_scans(["SCAN detections"]) == ["SCAN detections"]
    assert full_scans(["SCAN recordings USING INDEX ix_recordings_started"]) == []


def test_listing_pages_walk_the_start_index_and_count_detections_per_row(db: Database) -> None:
    first = assert_no_full_scan(db, lambda s: list_recordings(s, limit=100))
    page = assert_no_full_scan(
        db, lambda s: list_recordings(s, limit=10, before=(NOW - timedelta(minutes=5), 15))
    )
    for lines in (first[0], page[0]):
        text = "\n".join(lines)
        assert "ix_recordings_started" in text, text
        assert "TEMP B-TREE" not in text, text  # the index gives the order: no sort of all rows
        assert "ix_detections_recording_id" in text, text  # counted per row, by index
        assert "SCAN detections" not in text, text
    for filters in ({"state": "recorded"}, {"file_state": "present"}):
        filtered = assert_no_full_scan(db, lambda s, f=filters: list_recordings(s, **f))
        assert "TEMP B-TREE" not in "\n".join(filtered[0]), (filters, filtered[0])


def test_listing_pages_follow_each_other_without_gaps(db: Database) -> None:
    with db.session() as session:
        everything = [r.id for r, _ in list_recordings(session, limit=None)]
        pages: list[int] = []
        before = None
        while True:
            page = list_recordings(session, limit=6, before=before)
            if not page:
                break
            pages += [r.id for r, _ in page]
            last = page[-1][0]
            before = (last.started_at, last.id)
    assert pages == everything
    assert len(everything) == 20


def test_period_counts_read_the_start_index(db: Database) -> None:
    plans = assert_no_full_scan(
        db, lambda s: recordings_in_period(s, NOW - timedelta(hours=1), NOW)
    )
    assert "ix_recordings_started" in "\n".join(plans[0]) or "started" in "\n".join(plans[0])
    assert_no_full_scan(db, lambda s: pending_recordings_before(s, NOW))
    with db.session() as session:
        assert recordings_in_period(session, NOW - timedelta(hours=1), NOW)[0] == 20
        assert pending_recordings_before(session, NOW) == 5


def test_the_claim_reads_only_unfinished_recordings(db: Database) -> None:
    def claim(session: Any) -> Any:
        return claim_next(
            session,
            processor="energy",
            sensors=["mic"],
            token="energy@1#x",
            now=NOW,
            lease=60,
            max_attempts=3,
            media="audio",
        )

    plans = assert_no_full_scan(db, claim)
    text = "\n".join(plans[0])
    assert "ix_recordings_unfinished" in text, text
    assert "TEMP B-TREE" not in text, text
    assert_no_full_scan(db, lambda s: count_pending(s, processor="energy", sensors=None))
    with db.session() as session:
        assert count_pending(session, processor="energy", sensors=None) == 5


def test_startup_recovery_reads_only_unconfirmed_rows(db: Database) -> None:
    plans = assert_no_full_scan(db, unconfirmed_paths)
    assert "ix_recordings_unfinished" in "\n".join(plans[0])
    with db.session() as session:
        assert sorted(unconfirmed_paths(session)) == [f"data/mic/{i}.flac" for i in range(15, 20)]


def test_retention_by_age_and_outbox_depth_read_indexes(db: Database) -> None:
    from sqlalchemy import and_, select

    from fieldstation.store.models import Recording

    where = and_(deletable(Protection()), Recording.started_at < NOW - timedelta(days=30))
    assert_no_full_scan(db, lambda s: s.execute(select(Recording.id).where(where)).all())
    plans = explain(db, outbox_depth)
    assert "SCAN outbox_deliveries" not in "\n".join(plans[0])


def test_detection_listing_reads_an_index(db: Database) -> None:
    assert_no_full_scan(db, lambda s: list_detections(s, limit=50))
    plans = assert_no_full_scan(db, lambda s: list_detections(s, label="wren", limit=50))
    assert "ix_detections_label_time" in "\n".join(plans[0])


def test_migrations_build_the_models_indexes(db: Database) -> None:
    """Migration 0004 and the models agree: Alembic finds nothing to add or drop."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from fieldstation.store.models import Base

    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert [d for d in diff if "index" in str(d[0] if isinstance(d, tuple) else d)] == []


def test_the_sweep_asks_only_about_the_files_on_disk(db: Database) -> None:
    """Retention's start-up sweep: deleted rows among the files found, by the path index."""
    from sqlalchemy import update

    from fieldstation.store.models import Recording
    from fieldstation.store.retention import deleted_paths

    with db.session() as session:
        session.execute(
            update(Recording).where(Recording.chunk_index < 10).values(file_state="deleted")
        )
    on_disk = [f"data/mic/{i}.flac" for i in (3, 12)] + [f"data/mic/x{i}.flac" for i in range(600)]
    plans = assert_no_full_scan(db, lambda s: list(deleted_paths(s, among=on_disk)))
    for lines in plans:  # the unique path index, never file_state's (every deleted row)
        assert "sqlite_autoindex_recordings_1 (path=?)" in "\n".join(lines), lines
    with db.session() as session:
        assert list(deleted_paths(session, among=on_disk)) == ["data/mic/3.flac"]
        assert len(list(deleted_paths(session))) == 10
