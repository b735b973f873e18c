"""The fleet database: engine, migrations (the hub's own Alembic tree) and sessions.

``open_hub_database(url)`` takes a SQLAlchemy URL (``postgresql+psycopg://user@host/db`` for
fleets, ``sqlite:///path/hub.db`` embedded) and brings the schema to the head revision.
SQLite runs in WAL mode with a 30 s busy timeout, so several ingest processes can share one
file (they serialize their commits).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["HEAD", "HubDatabase", "open_hub_database"]

MIGRATIONS = Path(__file__).with_name("migrations")
HEAD = "0005"
"""Revision the code expects."""


class HubDatabase:
    """An engine and a session factory on the fleet database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        """``postgresql`` or ``sqlite``."""
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on normal exit, rolled back on an error."""
        with self._sessions.begin() as session:
            yield session

    def migrate(self) -> None:
        """Bring the schema to :data:`HEAD` in one transaction (Alembic, own version table
        ``hub_alembic_version``)."""
        from alembic import command
        from alembic.config import Config

        with self.engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; a SQLite file's folder is created. Raises ValueError for a URL
    of another database than PostgreSQL or SQLite."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql"):
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        return create_engine(url, pool_pre_ping=True)
    raise ValueError(
        f"database = {url!r}: the hub runs on PostgreSQL (postgresql+psycopg://user@host/db) "
        "or SQLite (sqlite:///path/hub.db)"
    )


def open_hub_database(url: str, *, migrate: bool = True) -> HubDatabase:
    """Open the fleet database at ``url`` (migrated to :data:`HEAD` unless ``migrate=False``)."""
    db = HubDatabase(make_engine(url))
    if migrate:
        db.migrate()
    return db
