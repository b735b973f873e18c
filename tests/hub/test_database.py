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
