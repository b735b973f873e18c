"""Alembic environment of the hub's own migration tree: runs on the connection given by
``fieldstation.hub.db.HubDatabase.migrate`` (one transaction: migrations and version stamp
commit together) or, by hand, on ``sqlalchemy.url``."""

from __future__ import annotations

from alembic import context

from fieldstation.hub.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - only when someone runs the alembic CLI by hand
    from sqlalchemy import create_engine

    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///hub.db")
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            version_table="hub_alembic_version",
        )
        context.run_migrations()
else:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,
        version_table="hub_alembic_version",
    )
    with context.begin_transaction():
        context.run_migrations()
