"""Set-based inserts of many rows in one statement, on PostgreSQL and SQLite.

:func:`insert_rows` writes a list of rows (dicts keyed by column name) into a table with ONE
round trip on PostgreSQL: ``INSERT INTO t (...) SELECT * FROM json_to_recordset(:rows) AS
r(col type, ...)``, the rows as one JSON array serialized by pydantic-core (Rust), so the
statement text is the same whatever the number of rows (psycopg prepares it once) and the rows
travel as one parameter, not as one Bind/Execute each (psycopg's executemany) nor as one array
per column (unnest: psycopg dumps arrays element by element in Python, measured 1.5x the
client CPU). On SQLite (in-process, no round trips) it is SQLAlchemy's executemany (or its
"insertmanyvalues" when rows are returned). Conflict clauses and ``RETURNING`` are the caller's,
as SQLAlchemy constructs, the same on both databases.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic_core import PydanticSerializationError, to_json
from sqlalchemy import JSON, Connection, LargeBinary, String, Table, Text, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError

__all__ = ["insert_rows"]


def _pg_type(column: Any) -> str:
    """The PostgreSQL type ``column`` is read as from the JSON rows. Strings are ``text``
    (a ``varchar(n)`` cast would truncate silently; the column's own check refuses instead)."""
    kind = column.type
    if isinstance(kind, String | Text) and not isinstance(kind, LargeBinary):
        return "text"
    if isinstance(kind, JSON):
        return "json"
    return str(kind.compile(dialect=postgresql.dialect()))


def insert_rows(
    connection: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    conflict: Callable[[Any], Any] | None = None,
    returning: Sequence[Any] = (),
    order_by_first: bool = False,
) -> list[Any]:
    """Insert ``rows`` (same keys in each; JSON columns as Python values, times aware; no
    binary columns: they would not survive the JSON form) into ``table`` in one statement;
    returns the ``returning`` columns of the rows inserted (an empty list without
    ``returning``). ``conflict(statement) -> statement`` adds an
    ``on_conflict_do_nothing()`` / ``on_conflict_do_update(...)`` (the dialect's insert).
    ``order_by_first``: on PostgreSQL the rows go in ordered by the first column, so two
    transactions upserting overlapping keys lock them in one order (no deadlock).
    Raises SQLAlchemy's errors (IntegrityError, DataError, ...) as the database gives them."""
    if not rows:
        return []
    names = list(rows[0])
    if connection.dialect.name == "postgresql":
        return _insert_postgresql(
            connection, table, rows, names, conflict, returning, order_by_first
        )
    statement: Any = sqlite.insert(table)
    if conflict is not None:
        statement = conflict(statement)
    if returning:
        statement = statement.returning(*returning)
        return list(connection.execute(statement, list(rows)).all())
    connection.execute(statement, list(rows))
    return []


_STATEMENTS: dict[Any, str] = {}
"""Compiled PostgreSQL statements by (table, columns, conflict's code, returning, order)."""


def _statement(
    connection: Connection,
    table: Table,
    names: list[str],
    conflict: Callable[[Any], Any] | None,
    returning: Sequence[Any],
    order_by_first: bool,
) -> str:
    key = (
        table.name,
        tuple(names),
        None if conflict is None else conflict.__code__,
        tuple(str(c) for c in returning),
        order_by_first,
    )
    sql = _STATEMENTS.get(key)
    if sql is None:
        columns = ", ".join(
            f"{connection.dialect.identifier_preparer.quote(name)} {_pg_type(table.c[name])}"
            for name in names
        )
        source = text(
            f"SELECT * FROM json_to_recordset(CAST(:rows AS json)) AS r({columns})"
            + (" ORDER BY 1" if order_by_first else "")
        ).columns(*(table.c[name] for name in names))
        statement: Any = postgresql.insert(table).from_select(names, source)
        if conflict is not None:
            statement = conflict(statement)
        if returning:
            statement = statement.returning(*returning)
        sql = str(statement.compile(dialect=connection.dialect))
        _STATEMENTS[key] = sql
    return sql


def _insert_postgresql(
    connection: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    names: list[str],
    conflict: Callable[[Any], Any] | None,
    returning: Sequence[Any],
    order_by_first: bool,
) -> list[Any]:
    """The rows as ONE JSON array parameter, turned back into typed rows by the server
    (``json_to_recordset``): the client's cost is one ``to_json`` (Rust) of the rows, nested
    JSON values included; on the session's own connection and transaction. The compiled
    statement is kept (``conflict`` must build the same clause every time for one code).
    Times come back aware, in UTC."""
    sql = _statement(connection, table, names, conflict, returning, order_by_first)
    try:  # pydantic's serializer (Rust): times as ISO 8601; NaN stays NaN, which PG refuses
        payload = to_json(rows, inf_nan_mode="constants").decode()
    except (PydanticSerializationError, UnicodeError) as error:
        raise DataError(sql, None, error) from error
    cursor = connection.connection.cursor()
    try:
        try:
            cursor.execute(sql, {"rows": payload})
        except connection.dialect.loaded_dbapi.Error as error:  # as SQLAlchemy would raise it
            raise DBAPIError.instance(
                sql, None, error, connection.dialect.loaded_dbapi.Error
            ) from error
        if not returning:
            return []
        return [
            tuple(v.astimezone(UTC) if isinstance(v, datetime) else v for v in row)
            for row in cursor.fetchall()
        ]
    finally:
        cursor.close()
