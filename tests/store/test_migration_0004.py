"""Migration 0004 (decision 0120): from 0003, with rows, and after a half-finished attempt."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, inspect, text

from fieldstation.store import SCHEMA_HEAD, open_database
from fieldstation.store.db import alembic_config

NEW = {
    ("recordings", "ix_recordings_started"),
    ("recordings", "ix_recordings_unfinished"),
    ("detections", "ix_detections_label_time"),
    ("outbox_deliveries", "ix_outbox_deliveries_state"),
}


def _at_0003(path: Path) -> None:
    from alembic import command

    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0003")
    engine.dispose()


def _indexes(path: Path) -> set[tuple[str, str]]:
    engine = create_engine(f"sqlite:///{path}")
    found = {
        (table, index["name"])
        for table in ("recordings", "detections", "outbox_deliveries")
        for index in inspect(engine).get_indexes(table)
    }
    engine.dispose()
    return found


def test_0003_to_head_adds_the_indexes_and_the_partial_condition(tmp_path: Path) -> None:
    path = tmp_path / "station.db"
    _at_0003(path)
    assert not NEW & _indexes(path)
    database = open_database(path)
    try:
        assert database.revision() == SCHEMA_HEAD
        with database.engine.connect() as connection:
            sql = connection.execute(
                text("SELECT sql FROM sqlite_master WHERE name = 'ix_recordings_unfinished'")
            ).scalar_one()
        assert "WHERE state IN ('recorded', 'processing')" in sql
    finally:
        database.dispose()
    assert _indexes(path) >= NEW


def test_an_index_left_by_a_killed_attempt_does_not_stop_it(tmp_path: Path) -> None:
    path = tmp_path / "station.db"
    _at_0003(path)
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:  # as if an older run died after its first statement
        connection.execute(text("CREATE INDEX ix_recordings_started ON recordings (started_at)"))
    engine.dispose()
    open_database(path).dispose()
    assert _indexes(path) >= NEW
