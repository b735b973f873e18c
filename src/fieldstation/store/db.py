"""Opening the station database: engine, pragmas, sessions and schema migrations.

SQLite runs in WAL mode with ``synchronous=FULL`` (a committed transaction survives a power cut,
https://www.sqlite.org/pragma.html#pragma_synchronous), foreign keys on and a busy timeout so
that the station's processes wait for each other instead of failing. Any SQLAlchemy URL works
too (PostgreSQL for the hub). Alembic is imported only when a migration must run.

A migration is all-or-nothing: every statement of it, the repair of a half-made database and
the version stamp run in one SQLite transaction (decision 0003), so a process killed at any
instant leaves the schema as it was. A database file that cannot be used (damaged, a
directory, read-only, a full disk) raises a :class:`StationDatabaseError` whose message says
what is wrong and what to do; :func:`database_error` turns a driver error into one.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.dialects.sqlite.base import SQLiteCompiler
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from fieldstation.home import HomeError, HomeReadOnlyError, disk_full, read_only

__all__ = [
    "SCHEMA_HEAD",
    "Database",
    "DatabaseDamagedError",
    "DatabaseReadOnlyError",
    "SchemaVersionError",
    "StationDatabaseError",
    "database_error",
    "open_database",
]

log = logging.getLogger(__name__)

SCHEMA_HEAD = "0007"
"""Alembic revision of the newest migration in this release (checked by a test)."""

_MIGRATIONS = Path(__file__).parent / "migrations"
_BUSY_TIMEOUT_MS = 30_000
DATABASE_MODE = 0o600
"""File mode of ``station.db`` and its ``-wal``/``-shm`` files (SQLite gives these the mode of
the database file): the outbox and the deployment config (coordinates) are the owner's only."""


class StationDatabaseError(HomeError):
    """The station database cannot be used as it is; the message is one line saying what is
    wrong and what to do. Subclasses say which kind of trouble it is."""


class SchemaVersionError(StationDatabaseError):
    """The database was written by a newer fieldstation (unknown schema revision)."""


class DatabaseDamagedError(StationDatabaseError):
    """The database file is damaged (not a database, malformed, a directory, half made with
    rows): retrying will not help; ``fieldstation db recover`` rebuilds it from ``data/``."""


class DatabaseReadOnlyError(StationDatabaseError, HomeReadOnlyError):
    """The database (or the folder holding it) cannot be written: a read-only mount, or it
    must be migrated and cannot be."""


def _known_revisions() -> set[str]:
    names = (p.name for p in (_MIGRATIONS / "versions").glob("*.py"))
    return {m[1] for n in names if (m := re.match(r"^(\d{4})_", n))}


_RECOVER = (
    "`fieldstation db recover` (with this station file) moves it aside and rebuilds it from data/"
)


def database_error(error: BaseException, path: str | Path) -> HomeError | None:
    """The :class:`~fieldstation.home.HomeError` (a :class:`StationDatabaseError`, or
    :class:`~fieldstation.home.DiskFullError`) for a driver (or OS) ``error`` met on the database at
    ``path``, or None when it is not one of the kinds a user must act on (a busy database, a
    constraint: programming or transient errors stay as they are).

    Kinds: damaged (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``, a directory), disk full
    (``SQLITE_FULL``, ``ENOSPC``, an I/O error with no space left), read-only
    (``SQLITE_READONLY``, ``EROFS``, a folder that cannot be written), cannot open.
    """
    path = Path(path)
    if isinstance(error, HomeError):
        return error
    original = getattr(error, "orig", None) or error
    if isinstance(original, OSError):
        if original.errno in (errno.ENOSPC, errno.EDQUOT):
            return disk_full(path)
        if original.errno == errno.EROFS:
            return _read_only(path, "it lies on a read-only filesystem")
        return None
    if not isinstance(original, sqlite3.Error):
        return None
    code = getattr(original, "sqlite_errorcode", None)
    if code is None:
        return None
    primary = code & 0xFF
    reason = str(original)
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return DatabaseDamagedError(
            f"the station database {path} is damaged ({reason}): {_RECOVER}"
        )
    if primary == sqlite3.SQLITE_FULL:
        return disk_full(path)
    if primary == sqlite3.SQLITE_READONLY:
        return _read_only(path, reason)
    if primary == sqlite3.SQLITE_IOERR:
        if shutil.disk_usage(_existing(path)).free == 0:
            return disk_full(path)
        return StationDatabaseError(
            f"I/O error on the station database {path} ({reason}): the card or disk may be "
            "failing; check the kernel log (dmesg), then `fieldstation db check`"
        )
    if primary == sqlite3.SQLITE_CANTOPEN:
        return _cannot_open(path, reason)
    return None


def _existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _read_only(path: Path, reason: str) -> DatabaseReadOnlyError:
    return DatabaseReadOnlyError(str(read_only(path, reason)))


def _cannot_open(path: Path, reason: str) -> StationDatabaseError:
    if path.is_dir():
        return DatabaseDamagedError(
            f"the station database {path} is a directory, not a database file: {_RECOVER}"
        )
    folder = _existing(path.parent)
    if not path.exists() and not os.access(folder, os.W_OK):
        return _read_only(path, f"{folder} cannot be written")
    if path.exists() and not os.access(path, os.R_OK):
        st = path.stat()
        return StationDatabaseError(
            f"cannot open the station database {path}: permission denied (owner uid "
            f"{st.st_uid}, mode {st.st_mode & 0o777:04o}); run as the station's user"
        )
    return StationDatabaseError(f"cannot open the station database {path} ({reason})")


def _read_only_target(path: Path) -> bool:
    """True when the database file exists but it, or its folder, cannot be written (a
    read-only mount): it is then opened read-only."""
    return path.exists() and not (
        os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)
    )


def _sqlite_pragmas(synchronous: str, *, read_only: bool = False) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        if read_only:
            cursor.execute("PRAGMA query_only = ON")
        else:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    return on_connect


class _SQLiteCompiler(SQLiteCompiler):
    """SQLite's statement compiler, rendering table hints after the table name
    (``select(...).with_hint(table, "INDEXED BY ix_name", "sqlite")``), which SQLAlchemy's
    SQLite dialect leaves out: the one place SQLite takes a hint
    (https://www.sqlite.org/lang_indexedby.html). Used for the claim's partial index
    (``store.models.UNFINISHED_HINT``, decision 0120)."""

    def get_from_hint_text(self, table: Any, text: str | None) -> str | None:
        return text


def _create_engine(url: str, *, synchronous: str = "FULL", read_only: bool = False) -> Engine:
    sqlite = url.startswith("sqlite")
    engine = create_engine(url, connect_args={"timeout": _BUSY_TIMEOUT_MS / 1000} if sqlite else {})
    if sqlite:
        engine.dialect.statement_compiler = _SQLiteCompiler
        event.listen(engine, "connect", _sqlite_pragmas(synchronous, read_only=read_only))
    return engine


def _transactional_ddl(engine: Engine) -> Engine:
    """Make ``engine``'s transactions real SQLite transactions for DDL too.

    pysqlite begins a transaction only before INSERT/UPDATE/DELETE, so each ``CREATE TABLE``
    commits on its own; a process killed half-way through a migration left some tables and
    no version stamp. With the driver's transaction handling off and an explicit
    ``BEGIN IMMEDIATE`` (the SQLAlchemy recipe, "Serializable isolation / Savepoints /
    Transactional DDL" in its SQLite dialect docs), everything up to the commit is one
    transaction, and the write lock is taken before the schema is read.
    """

    def autocommit_driver(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    def begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", autocommit_driver)
    event.listen(engine, "begin", begin)
    return engine


class Database:
    """An open station database: ``session()`` gives a transaction, committed on success.

    Build it with :func:`open_database`. Safe to use from several threads; each process opens
    its own (never share one across ``fork``). ``path`` is the file (None for a URL);
    ``read_only`` is True when it was opened read-only.
    """

    def __init__(self, engine: Engine, *, path: Path | None = None, read_only: bool = False):
        self.engine = engine
        self.path = path
        self.read_only = read_only
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._light_engine: Engine | None = None
        self._light_sessions: sessionmaker[Session] | None = None
        self._light_lock = threading.Lock()

    @property
    def where(self) -> str:
        """The file (or URL) of the database, for messages."""
        return str(self.path) if self.path is not None else str(self.engine.url)

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
        if not durable and self.engine.dialect.name == "sqlite" and not self.read_only:
            with self._light_lock:
                if self._light_sessions is None:
                    url = self.engine.url.render_as_string(hide_password=False)
                    self._light_engine = _create_engine(url, synchronous="NORMAL")
                    self._light_sessions = sessionmaker(self._light_engine, expire_on_commit=False)
                sessions = self._light_sessions
        try:
            with sessions.begin() as session:
                yield session
        except DBAPIError as error:
            if self.path is not None:  # for the one-line message of cli.common.station_error
                error.add_note(f"station database: {self.path}")
            raise

    def revision(self) -> str | None:
        """The schema revision stamped in the database, or None for an empty database.

        Raises :class:`StationDatabaseError` when the file cannot be read (damaged, ...).
        """
        try:
            with self.engine.connect() as connection:
                return _stamped(connection)
        except DBAPIError as error:
            raise self._translated(error) from error

    def check_schema(self) -> str | None:
        """The stamped revision, after checking that this release knows it (no Alembic needed).

        Raises :class:`SchemaVersionError` when the database carries a revision this release
        does not know (it was written by a newer fieldstation), :class:`StationDatabaseError`
        when the file cannot be read.
        """
        current = self.revision()
        if current is not None and current not in _known_revisions():
            raise SchemaVersionError(
                f"the database {self.where} is at schema revision {current!r}, "
                f"newer than this fieldstation knows (head {SCHEMA_HEAD!r}); upgrade "
                "fieldstation, or use another station home"
            )
        return current

    def migrate(self) -> bool:
        """Bring the schema to :data:`SCHEMA_HEAD` in one transaction; True when it changed.

        A half-made database left by an older release killed while creating its tables
        (tables, no version stamp, no rows) is rebuilt in the same transaction; one holding
        rows is refused (:class:`DatabaseDamagedError`), never dropped. Raises
        :class:`SchemaVersionError` as :meth:`check_schema` does, and
        :class:`StationDatabaseError` for a file that cannot be used (read-only, full disk,
        damaged).
        """
        if self.check_schema() == SCHEMA_HEAD:
            return False
        if self.read_only:
            raise _read_only(
                Path(self.where),
                f"opened read-only, and its schema {self.revision()!r} needs an upgrade to "
                f"{SCHEMA_HEAD!r}",
            )
        from alembic import command  # heavy (+34 MiB): only while migrating

        url = self.engine.url.render_as_string(hide_password=False)
        engine = _create_engine(url)
        if engine.dialect.name == "sqlite":
            _transactional_ddl(engine)
        try:
            with engine.begin() as connection:
                if _stamped(connection) == SCHEMA_HEAD:  # migrated meanwhile by another process
                    return False
                _clear_half_made(connection, self.where)
                command.upgrade(alembic_config(connection), "head")
        except DBAPIError as error:
            raise self._translated(error) from error
        finally:
            engine.dispose()
        return True

    def _translated(self, error: DBAPIError) -> BaseException:
        if self.path is None:
            return error
        return database_error(error, self.path) or error

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
        if self._light_engine is not None:
            self._light_engine.dispose()


def _stamped(connection: Connection) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _clear_half_made(connection: Connection, where: str) -> None:
    """Drop the tables of a half-made schema (tables but no version stamp), when all of them
    are fieldstation's and empty; raises :class:`DatabaseDamagedError` otherwise."""
    if _stamped(connection) is not None:
        return
    from fieldstation.store.models import Base

    tables = set(inspect(connection).get_table_names())
    if not tables:
        return
    ours = set(Base.metadata.tables) | {"alembic_version"}
    strangers = sorted(tables - ours)
    if strangers:
        raise DatabaseDamagedError(
            f"{where} is not a station database (tables {', '.join(strangers[:5])}); use "
            "another station home, or move the file away"
        )
    rows = {
        table: connection.execute(text(f'SELECT count(*) FROM "{table}"')).scalar() or 0
        for table in sorted(tables)
    }
    held = {table: n for table, n in rows.items() if n}
    if held:
        listed = ", ".join(f"{table} {n}" for table, n in held.items())
        raise DatabaseDamagedError(
            f"the station database {where} has no schema version but holds rows ({listed}); "
            f"fieldstation will not guess its schema: {_RECOVER}"
        )
    log.warning(
        "%s: half-made schema (%d empty tables, no version): rebuilding it", where, len(tables)
    )
    connection.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
    for table in sorted(tables):
        connection.exec_driver_sql(f'DROP TABLE "{table}"')


def alembic_config(bind: Engine | Connection) -> Any:
    """An Alembic ``Config`` for this package's migrations, bound to ``bind`` (an engine, or a
    connection whose transaction the migration joins)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection" if isinstance(bind, Connection) else "engine"] = bind
    return config


def _sqlite_url(path: Path, read_only: bool, immutable: bool = False) -> str:
    if not read_only:
        return f"sqlite:///{path}"
    # immutable=1 when mode=ro cannot open: a WAL database whose -shm cannot be created on a
    # read-only mount (https://www.sqlite.org/uri.html#uriimmutable)
    option = "immutable=1" if immutable else "mode=ro"
    return f"sqlite:///file:{quote(str(path.absolute()))}?{option}&uri=true"


def _create_private(path: Path) -> None:
    """Create ``path`` empty with :data:`DATABASE_MODE` if missing, so that SQLite (and its
    -wal and -shm files, which take the database file's mode) never open it wider."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, DATABASE_MODE)
    except FileExistsError:
        return
    os.close(fd)


def open_database(
    target: str | Path, *, migrate: bool = True, read_only: bool | None = None
) -> Database:
    """Open the database at a file path (SQLite) or SQLAlchemy URL, migrating it by default.

    ``read_only``: open a SQLite file read-only (``mode=ro``, or ``immutable=1`` when that
    cannot open a WAL file on a read-only mount); None (default): read-only exactly when the
    file exists and it or its folder cannot be written. A read-only database is not migrated:
    one that would need it raises :class:`DatabaseReadOnlyError`. A new file is created with
    mode :data:`DATABASE_MODE`.

    Raises :class:`SchemaVersionError` (newer schema) or another
    :class:`StationDatabaseError` (damaged, read-only, disk full, cannot open).
    """
    url = str(target)
    path: Path | None = None
    if "://" not in url:
        path = Path(target).expanduser()
        if read_only is None:
            read_only = _read_only_target(path)
        if not read_only:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                _create_private(path)
            except OSError as error:
                raise (database_error(error, path) or error) from error
        url = _sqlite_url(path, bool(read_only))
    database = Database(
        _create_engine(url, read_only=bool(read_only)), path=path, read_only=bool(read_only)
    )
    if read_only and path is not None:
        try:
            database.revision()
        except HomeError:
            database.dispose()
            database = Database(
                _create_engine(_sqlite_url(path, True, immutable=True), read_only=True),
                path=path,
                read_only=True,
            )
    try:
        if migrate:
            database.migrate()
        else:
            database.revision()  # a file that is no database fails here, in one clear line
    except BaseException:
        database.dispose()
        raise
    return database
