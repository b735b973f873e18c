"""Set-based inserts of many rows in one statement, on PostgreSQL and SQLite.

:func:`insert_rows` writes a list of rows (dicts keyed by column name) into a table with ONE
round trip on PostgreSQL: ``INSERT INTO t (...) SELECT * FROM unnest(:c0::type[], ...)``, one
array parameter per column, so the statement text is the same whatever the number of rows
(psycopg and the server parse it once) and the rows travel as arrays, not as one Bind/Execute
each. On SQLite (in-process, no round trips) it is SQLAlchemy's executemany (or its
"insertmanyvalues" when rows are returned). Conflict clauses and ``RETURNING`` are the caller's,
as SQLAlchemy constructs, the same on both databases.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Connection, LargeBinary, String, Table, Text, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

__all__ = ["insert_rows"]


def _pg_array_type(column: Any) -> str:
    """The PostgreSQL element type of ``column``'s array parameter. Strings travel as ``text``
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
    """Insert ``rows`` (same keys in each; JSON columns as Python values, times aware) into
    ``table`` in one statement; returns the ``returning`` columns of the rows inserted (an
    empty list without ``returning``). ``conflict(statement) -> statement`` adds an
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
    statement = sqlite.insert(table)
    if conflict is not None:
        statement = conflict(statement)
    if returning:
        statement = statement.returning(*returning)
        return list(connection.execute(statement, list(rows)).all())
    connection.execute(statement, list(rows))
    return []


_PLACEHOLDER = re.compile(r"%\((c\d+)\)s")


def _insert_postgresql(
    connection: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    names: list[str],
    conflict: Callable[[Any], Any] | None,
    returning: Sequence[Any],
    order_by_first: bool,
) -> list[Any]:
    """The ``unnest`` form, its arrays sent in binary (``%b``: psycopg's text form of an array
    escapes every element with regular expressions, four times slower), on the session's own
    connection and transaction. Times come back aware, in UTC."""
    params: dict[str, Any] = {}
    casts = []
    for i, name in enumerate(names):
        column = table.c[name]
        values = [row[name] for row in rows]
        if isinstance(column.type, JSON):  # text[] in binary, then json[] on the server
            params[f"c{i}"] = [None if v is None else json.dumps(v) for v in values]
            casts.append(f"CAST(CAST(:c{i} AS text[]) AS json[])")
        else:
            params[f"c{i}"] = values
            casts.append(f"CAST(:c{i} AS {_pg_array_type(column)}[])")
    source = text(
        f"SELECT * FROM unnest({', '.join(casts)})" + (" ORDER BY 1" if order_by_first else "")
    ).columns(*(table.c[name] for name in names))
    statement: Any = postgresql.insert(table).from_select(names, source)
    if conflict is not None:
        statement = conflict(statement)
    if returning:
        statement = statement.returning(*returning)
    sql = _PLACEHOLDER.sub(r"%(\1)b", str(statement.compile(dialect=connection.dialect)))
    cursor = connection.connection.cursor()
    try:
        try:
            cursor.execute(sql, params)
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
