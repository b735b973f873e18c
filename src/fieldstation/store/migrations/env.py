"""Alembic environment: runs the station migrations on the connection given by fieldstation.

fieldstation passes a connection inside its own transaction (``store.db.Database.migrate``), so
every migration and the version stamp commit together; ``transactional_ddl`` tells Alembic so.
"""

from __future__ import annotations

from alembic import context

from fieldstation.store.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - only when someone runs the alembic CLI by hand
    from sqlalchemy import create_engine

    engine = config.attributes.get("engine") or create_engine(
        config.get_main_option("sqlalchemy.url") or "sqlite:///station.db"
    )
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        context.run_migrations()
else:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()
