"""Opening the station database: engine, pragmas, sessions and schema migrations.

SQLite runs in WAL mode with ``synchronous=FULL`` (a committed transaction survives a power cut,
https://www.sqlite.org/pragma.html#pragma_synchronous), foreign keys on and a busy timeout so
that the station's processes wait for each other instead of failing. Any SQLAlchemy URL works
too (PostgreSQL for the hub). Alembic is imported only when a migration must run.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["SCHEMA_HEAD", "Database", "SchemaVersionError", "open_database"]

SCHEMA_HEAD = "0002"
"""Alembic revision of the newest migration in this release (checked by a test)."""

_MIGRATIONS = Path(__file__).parent / "migrations"
_BUSY_TIMEOUT_MS = 30_000


class SchemaVersionError(RuntimeError):
    """The database was written by a newer fieldstation (unknown schema revision)."""


def _known_revisions() -> set[str]:
    names = (p.name for p in (_MIGRATIONS / "versions").glob("*.py"))
    return {m[1] for n in names if (m := re.match(r"^(\d{4})_", n))}


def _sqlite_pragmas(synchronous: str) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute(f"PRAGMA synchronous = {synchronous}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    return on_connect


def _create_engine(url: str, *, synchronous: str = "FULL") -> Engine:
    sqlite = url.startswith("sqlite")
    engine = create_engine(url, connect_args={"timeout": _BUSY_TIMEOUT_MS / 1000} if sqlite else {})
    if sqlite:
        event.listen(engine, "connect", _sqlite_pragmas(synchronous))
    return engine


class Database:
    """An open station database: ``session()`` gives a transaction, committed on success.

    Build it with :func:`open_database`. Safe to use from several threads; each process opens
    its own (never share one across ``fork``).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._light_engine: Engine | None = None
        self._light_sessions: sessionmaker[Session] | None = None
        self._light_lock = threading.Lock()

    @contextmanager
    def session(self, *, durable: bool = True) -> Iterator[Session]:
        """A session in one transaction: committed when the block ends, rolled back on error.

        ``durable=False``: on SQLite the commit does not wait for the disk
        (``synchronous=NORMAL`` in WAL mode: a power cut may undo the transaction, never
        corrupt the database, https://www.sqlite.org/pragma.html#pragma_synchronous; the next
        durable commit of any process makes it durable too). Only for transactions whose loss
        is harmless and recovered anyway, such as processing claims (start-up releases every
        claim). It uses a second connection pool of its own.
        """
        sessions = self._sessions
        if not durable and self.engine.dialect.name == "sqlite":
            with self._light_lock:
                if self._light_sessions is None:
                    url = self.engine.url.render_as_string(hide_password=False)
                    self._light_engine = _create_engine(url, synchronous="NORMAL")
                    self._light_sessions = sessionmaker(self._light_engine, expire_on_commit=False)
                sessions = self._light_sessions
        with sessions.begin() as session:
            yield session

    def revision(self) -> str | None:
        """The schema revision stamped in the database, or None for an empty database."""
        if not inspect(self.engine).has_table("alembic_version"):
            return None
        with self.engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()

    def check_schema(self) -> str | None:
        """The stamped revision, after checking that this release knows it (no Alembic needed).

        Raises :class:`SchemaVersionError` when the database carries a revision this release
        does not know (it was written by a newer fieldstation).
        """
        current = self.revision()
        if current is not None and current not in _known_revisions():
            raise SchemaVersionError(
                f"the database {self.engine.url.database} is at schema revision {current!r}, "
                f"newer than this fieldstation knows (head {SCHEMA_HEAD!r}); upgrade "
                "fieldstation, or use another station home"
            )
        return current

    def migrate(self) -> bool:
        """Bring the schema to :data:`SCHEMA_HEAD`; True when a migration ran.

        Raises :class:`SchemaVersionError` as :meth:`check_schema` does.
        """
        if self.check_schema() == SCHEMA_HEAD:
            return False
        from alembic import command  # heavy (+34 MiB): only while migrating

        command.upgrade(alembic_config(self.engine), "head")
        return True

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
        if self._light_engine is not None:
            self._light_engine.dispose()


def alembic_config(engine: Engine) -> Any:
    """An Alembic ``Config`` for this package's migrations, bound to ``engine``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def open_database(target: str | Path, *, migrate: bool = True) -> Database:
    """Open the database at a file path (SQLite) or SQLAlchemy URL, migrating it by default.

    Raises :class:`SchemaVersionError` (newer schema) or ``sqlalchemy.exc.OperationalError``
    (unreadable file).
    """
    url = str(target)
    if "://" not in url:
        path = Path(target).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{path}"
    database = Database(_create_engine(url))
    if migrate:
        try:
            database.migrate()
        except OperationalError:
            database.dispose()
            raise
    return database
