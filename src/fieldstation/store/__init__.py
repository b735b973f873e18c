"""The station database: SQLAlchemy models, Alembic migrations and repository functions.

Imports nothing of fieldstation above it. Other modules read and write the database only
through the repository functions here (``store.deployments``, ``store.outbox``, ...).
"""

from fieldstation.store.db import (
    SCHEMA_HEAD,
    Database,
    DatabaseDamagedError,
    DatabaseReadOnlyError,
    SchemaVersionError,
    StationDatabaseError,
    open_database,
)

__all__ = [
    "SCHEMA_HEAD",
    "Database",
    "DatabaseDamagedError",
    "DatabaseReadOnlyError",
    "SchemaVersionError",
    "StationDatabaseError",
    "open_database",
]
