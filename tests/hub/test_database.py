"""The fleet database: the Alembic tree builds exactly the models' schema (no drift), with the
indexes the detections explorer needs, on SQLite and PostgreSQL; migrating twice is a no-op."""

from __future__ import annotations

from sqlalchemy import inspect

from fieldstation.hub.db import HEAD, open_hub_database
from fieldstation.hub.models import Base


def test_migrations_build_the_models_schema(hub_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    db = open_hub_database(hub_url)
    try:
        db.migrate()  # again: nothing to do
        with db.engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": "hub_alembic_version"}
            )
            assert context.get_current_revision() == HEAD
            assert compare_metadata(context, Base.metadata) == []
            indexes = {
                tuple(index["column_names"])
                for index in inspect(connection).get_indexes("detections")
            }
        assert ("station", "detected_at") in indexes
        assert ("label", "detected_at") in indexes
    finally:
        db.dispose()


def test_upgrading_a_0001_database_keeps_each_stations_newest_recording_and_detection(
    hub_url: str,
) -> None:
    """A hub upgraded from revision 0001 (recordings and detections stored, no
    ``last_recording_at``) must not find every station silent: 0002 fills the stations'
    newest recording and detection from the rows (here: down to 0001 and up again)."""
    import uuid
    from datetime import UTC, datetime, timedelta

    from alembic import command
    from alembic.config import Config
    from sqlalchemy import select

    from fieldstation.hub.db import MIGRATIONS
    from fieldstation.hub.models import Station
    from fieldstation.hub.store import Incoming, store_batch
    from fieldstation.messages import build_envelope

    t0 = datetime(2026, 6, 1, 4, 0, tzinfo=UTC)

    def envelope(kind: str, station: str, body: dict[str, object], at: datetime) -> Incoming:
        payload = build_envelope(
            kind=kind, station=station, body=body, created_at=at, message_id=uuid.uuid4().hex
        ).to_json()
        return Incoming(payload, "test")

    def recording(station: str, at: datetime, row: int) -> Incoming:
        body = {
            "recording_id": row,
            "sensor": "mic",
            "path": f"recordings/{row}.flac",
            "session_id": "s1",
            "chunk_index": row,
            "start_frame": 0,
            "started_at": at.isoformat(),
            "duration": 60.0,
            "media": "audio",
            "rate": 48000,
            "channels": 1,
            "frames": 2_880_000,
            "bytes": 1000,
            "sha256": "0" * 64,
            "format": "flac",
            "end_reason": "complete",
        }
        return envelope("recording", station, body, at)

    def detection(station: str, at: datetime) -> Incoming:
        body = {
            "recording_id": 1,
            "sensor": "mic",
            "recording_started_at": at.isoformat(),
            "processor": "energy",
            "model": "energy",
            "model_version": "1",
            "detections": [
                {"label": "tone", "score": 0.5, "start": 0.0, "end": 1.0, "detected_at": at}
            ],
        }
        return envelope("detection", station, body, at)

    db = open_hub_database(hub_url)
    try:
        batch = [
            recording("hedge-01", t0, 1),
            recording("hedge-01", t0 + timedelta(minutes=5), 2),
            detection("hedge-01", t0 + timedelta(minutes=1)),
            recording("hedge-02", t0 + timedelta(minutes=2), 1),
        ]
        assert store_batch(db, batch, via="test", now=t0).stored == 4

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with db.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0001")
        db.migrate()

        with db.session() as session:
            rows = {s.id: s for s in session.scalars(select(Station))}
        assert rows["hedge-01"].last_recording_at == t0 + timedelta(minutes=5)
        assert rows["hedge-01"].last_detection_at == t0 + timedelta(minutes=1)
        assert rows["hedge-02"].last_recording_at == t0 + timedelta(minutes=2)
        assert rows["hedge-02"].last_detection_at is None
    finally:
        db.dispose()
