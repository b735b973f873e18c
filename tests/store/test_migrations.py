"""Schema migrations: to head, idempotent, newer revisions refused."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from fieldstation.store import SCHEMA_HEAD, SchemaVersionError, open_database
from fieldstation.store.db import Database, alembic_config
from fieldstation.store.deployments import current_deployment, start_deployment


def test_head_constant_matches_alembic(tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    database = open_database(tmp_path / "s.db", migrate=False)
    script = ScriptDirectory.from_config(alembic_config(database.engine))
    assert script.get_current_head() == SCHEMA_HEAD


def test_empty_database_is_brought_to_head(tmp_path: Path) -> None:
    database = open_database(tmp_path / "s.db")
    assert database.revision() == SCHEMA_HEAD
    tables = set(inspect(database.engine).get_table_names())
    assert {
        "deployments",
        "recordings",
        "detections",
        "model_runs",
        "outbox_messages",
        "outbox_deliveries",
        "events",
    } <= tables
    indexes = {i["name"] for i in inspect(database.engine).get_indexes("recordings")}
    assert "ix_recordings_state_started" in indexes
    queue = {i["name"] for i in inspect(database.engine).get_indexes("outbox_deliveries")}
    assert "ix_outbox_deliveries_queue" in queue


def test_migrating_twice_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    open_database(path).dispose()
    with open_database(path, migrate=False).engine.connect() as c:
        before = c.execute(text("SELECT sql FROM sqlite_master ORDER BY name")).all()
    database = open_database(path, migrate=False)
    assert database.migrate() is False
    with database.engine.connect() as c:
        after = c.execute(text("SELECT sql FROM sqlite_master ORDER BY name")).all()
    assert before == after


def test_newer_revision_is_refused_with_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    database = open_database(path)
    with database.engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    database.dispose()
    with pytest.raises(SchemaVersionError, match="newer than this fieldstation"):
        open_database(path)


def test_wal_and_durability_pragmas(tmp_path: Path) -> None:
    database = open_database(tmp_path / "s.db")
    with database.engine.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert c.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert c.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert c.execute(text("PRAGMA busy_timeout")).scalar() == 30000


def test_a_non_durable_session_skips_only_the_sync(tmp_path: Path) -> None:
    database = open_database(tmp_path / "s.db")
    with database.session(durable=False) as session:
        assert session.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1
        session.execute(text("UPDATE alembic_version SET version_num = version_num"))
    with database.session() as session:  # the durable pool is untouched
        assert session.execute(text("PRAGMA synchronous")).scalar() == 2
    database.dispose()


def test_times_round_trip_as_aware_utc_to_the_microsecond(db: Database) -> None:
    started = datetime(2026, 3, 29, 0, 59, 59, 123456, tzinfo=UTC)
    with db.session() as session:
        start_deployment(
            session, station_id="s", config_hash="a" * 64, config={}, version="0", now=started
        )
    with db.session() as session:
        deployment = current_deployment(session)
        assert deployment is not None
        assert deployment.started_at == started
        assert deployment.started_at.tzinfo is not None


def test_naive_datetimes_are_refused(db: Database) -> None:
    with pytest.raises(Exception, match="naive datetime"), db.session() as session:
        start_deployment(
            session,
            station_id="s",
            config_hash="a" * 64,
            config={},
            version="0",
            now=datetime(2026, 1, 1),
        )


def test_same_config_continues_deployment_new_config_starts_one(db: Database) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    t1 = datetime(2026, 2, 1, tzinfo=UTC)
    with db.session() as s:
        first = start_deployment(
            s, station_id="s", config_hash="a" * 64, config={}, version="0", now=t0
        ).id
    with db.session() as s:
        again = start_deployment(
            s, station_id="s", config_hash="a" * 64, config={}, version="0", now=t1
        ).id
        changed = start_deployment(
            s, station_id="s", config_hash="b" * 64, config={}, version="0", now=t1
        ).id
    assert again == first
    assert changed != first


def test_commands_refuse_a_newer_database_with_one_clear_line(tmp_path: Path) -> None:
    """`run`, `recordings` and `outbox status` on a newer release's database: exit 2, no
    traceback, the message says what to do."""
    import subprocess
    import sys
    import tomllib

    import tomli_w

    from fieldstation.config import template_text

    data = tomllib.loads(template_text())
    data["station"]["home"] = str(tmp_path / "home")
    config = tmp_path / "station.toml"
    config.write_text(tomli_w.dumps(data))
    database = open_database(tmp_path / "home" / "station.db")
    with database.engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    database.dispose()
    cli = [sys.executable, "-m", "fieldstation.cli"]
    for args in (
        ["run", "-c", str(config), "--for", "1s"],
        ["recordings", "-c", str(config)],
        ["outbox", "status", "-c", str(config)],
    ):
        done = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=60)
        output = done.stdout + done.stderr
        assert done.returncode == 2, (args, output)
        assert "newer than this fieldstation" in output and "upgrade fieldstation" in output
        assert "Traceback" not in output, output


def _half_made(path: Path, *, keep: int, rows: bool = False, empty_version: bool = False) -> None:
    """What an older release killed while creating its tables left: ``keep`` of the tables,
    no version stamp (an empty ``alembic_version`` when ``empty_version``), rows if asked."""
    database = open_database(path)
    with database.engine.begin() as c:
        if rows:
            c.execute(
                text(
                    "INSERT INTO deployments (station_id, config_hash, config, "
                    "fieldstation_version, started_at) VALUES ('s', 'h', '{}', '0', "
                    "'2026-01-01 00:00:00')"
                )
            )
        names = [n for n in inspect(c).get_table_names() if n != "alembic_version"]
        for name in sorted(names)[keep:]:
            c.execute(text(f'DROP TABLE "{name}"'))
        c.execute(text("DELETE FROM alembic_version"))
        if not empty_version:
            c.execute(text("DROP TABLE alembic_version"))
    database.dispose()


@pytest.mark.parametrize(("keep", "empty_version"), [(1, True), (3, False), (7, True)])
def test_a_half_made_schema_of_an_older_release_is_rebuilt(
    tmp_path: Path, keep: int, empty_version: bool
) -> None:
    path = tmp_path / "s.db"
    _half_made(path, keep=keep, empty_version=empty_version)
    database = open_database(path)
    assert database.revision() == SCHEMA_HEAD
    assert "outbox_deliveries" in inspect(database.engine).get_table_names()
    database.dispose()


def test_a_half_made_schema_holding_rows_is_refused_never_dropped(tmp_path: Path) -> None:
    from fieldstation.store.db import DatabaseDamagedError

    path = tmp_path / "s.db"
    _half_made(path, keep=8, rows=True)
    with pytest.raises(DatabaseDamagedError, match=r"holds rows \(deployments 1\).*db recover"):
        open_database(path)
    database = open_database(path, migrate=False)
    with database.engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM deployments")).scalar() == 1
    database.dispose()


def test_0002_half_applied_by_an_older_release_is_finished(tmp_path: Path) -> None:
    """Column added, killed before the stamp: the stamp says 0001."""
    path = tmp_path / "s.db"
    database = open_database(path)
    with database.engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    database.dispose()
    database = open_database(path)
    assert database.revision() == SCHEMA_HEAD
    database.dispose()


def test_a_new_database_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    open_database(path).dispose()
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_read_only_database_reads_but_is_never_migrated(tmp_path: Path) -> None:
    from fieldstation.store import DatabaseReadOnlyError

    path = tmp_path / "s.db"
    database = open_database(path)
    database.dispose()
    reader = open_database(path, read_only=True)
    assert reader.read_only and reader.revision() == SCHEMA_HEAD
    with pytest.raises(Exception, match="readonly"), reader.session() as session:
        session.execute(text("DELETE FROM deployments"))
    reader.dispose()
    database = open_database(path)
    with database.engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    database.dispose()
    with pytest.raises(DatabaseReadOnlyError, match=f"needs an upgrade to '{SCHEMA_HEAD}'"):
        open_database(path, read_only=True)
