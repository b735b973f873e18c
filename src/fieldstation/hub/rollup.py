"""The detection rollup: detections counted per (station, label, UTC day) and per (station,
UTC day), so the explorer's counts per day read a few thousand small rows, not every
detection of the window (issue 16; decision 0145).

Kept exact by design: :func:`count_inserted` adds the detections a transaction inserted, in
that transaction, so the counts commit (or roll back) with the rows they count. A redelivered
message inserts no detection (its ``messages`` row exists: see
:mod:`fieldstation.hub.store`), so it adds nothing. Migration 0005 backfills both tables from
the detections already stored; :func:`rebuild` does the same after a bulk import that bypassed
:func:`count_inserted` (COPY).

Concurrency: the upserts go in key order, so two hub processes adding to the same rows
(``INSERT ... ON CONFLICT DO UPDATE``) wait for each other instead of deadlocking.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, Table, func, select, text
from sqlalchemy.orm import Session

from fieldstation.hub.models import DetectionDay, StationDay

__all__ = ["count_inserted", "counts_per_day", "rebuild"]


def _table(model: Any) -> Table:
    return model.__table__  # type: ignore[no-any-return]


def _upsert(connection: Connection, table: Table, keys: list[str], counts: Counter[Any]) -> None:
    """Add ``counts`` ({key tuple: n}) to ``table``'s ``count`` column, in key order."""
    if not counts:
        return
    from sqlalchemy.dialects import postgresql, sqlite

    statement: Any = (
        postgresql.insert(table)
        if connection.dialect.name == "postgresql"
        else sqlite.insert(table)
    )
    statement = statement.on_conflict_do_update(
        index_elements=keys, set_={"count": table.c["count"] + statement.excluded["count"]}
    )
    connection.execute(
        statement,
        [{**dict(zip(keys, key, strict=True)), "count": n} for key, n in sorted(counts.items())],
    )


def _fields(row: Any) -> tuple[str, str, datetime]:
    """(station, label, detected_at) of a mapping, a SQLAlchemy ``Row`` or a 3-tuple."""
    mapping = row if isinstance(row, Mapping) else getattr(row, "_mapping", None)
    if mapping is not None:
        return mapping["station"], mapping["label"], mapping["detected_at"]
    station, label, at = row
    return station, label, at


def count_inserted(target: Connection | Session, rows: Iterable[Any]) -> None:
    """Add the detections in ``rows`` to the rollup, in ``target``'s transaction.

    ``rows``: the detection rows just inserted, only those (e.g. an insert's ``RETURNING
    station, label, detected_at``): mappings or SQLAlchemy rows with ``station``, ``label``
    and an aware ``detected_at``, or (station, label, detected_at) tuples. A row counted here
    and not inserted, or inserted and not counted, makes the counts wrong for good. Raises
    ValueError for a naive ``detected_at``; the database's errors unchanged (the caller's
    transaction then rolls back the detections too)."""
    per_label: Counter[tuple[str, str, date]] = Counter()
    per_station: Counter[tuple[str, date]] = Counter()
    for row in rows:
        station, label, at = _fields(row)
        if at.tzinfo is None:
            raise ValueError(f"detected_at {at!r} is naive: give an aware (UTC) time")
        day = at.astimezone(UTC).date()
        per_label[(station, label, day)] += 1
        per_station[(station, day)] += 1
    connection = target.connection() if isinstance(target, Session) else target
    _upsert(connection, _table(DetectionDay), ["station", "label", "day"], per_label)
    _upsert(connection, _table(StationDay), ["station", "day"], per_station)


def rebuild(target: Connection | Session) -> None:
    """Recount both tables from ``detections`` (after a bulk import that bypassed
    :func:`count_inserted`), in ``target``'s transaction. Reads every detection once."""
    connection = target.connection() if isinstance(target, Session) else target
    if connection.dialect.name == "postgresql":
        day = "CAST(detected_at AT TIME ZONE 'UTC' AS DATE)"
    else:
        day = "date(detected_at)"
    connection.execute(text("DELETE FROM station_days"))
    connection.execute(text("DELETE FROM detection_days"))
    connection.execute(
        text(
            "INSERT INTO detection_days (station, label, day, count) SELECT station, label, "
            f"{day}, COUNT(*) FROM detections GROUP BY station, label, {day}"
        )
    )
    connection.execute(
        text(
            "INSERT INTO station_days (station, day, count) "
            "SELECT station, day, SUM(count) FROM detection_days GROUP BY station, day"
        )
    )


def counts_per_day(
    target: Connection | Session,
    *,
    station: str | None = None,
    label: str | None = None,
    first: date | None = None,
    last: date | None = None,
    days: int = 60,
) -> list[tuple[date, int]]:
    """Detections per UTC day from the rollup, oldest first: the newest ``days`` days (with
    any detection) from ``first`` to ``last`` (inclusive; None: open), of ``station`` and
    ``label`` (None: any). Reads ``station_days`` when no label is given (one row per
    station and day), else ``detection_days``."""
    table = _table(StationDay) if label is None else _table(DetectionDay)
    clauses: list[Any] = []
    if label is not None:
        clauses.append(table.c.label == label)
    if station is not None:
        clauses.append(table.c.station == station)
    if first is not None:
        clauses.append(table.c.day >= first)
    if last is not None:
        clauses.append(table.c.day <= last)
    total = func.sum(table.c["count"])
    query = (
        select(table.c.day, total)
        .where(*clauses)
        .group_by(table.c.day)
        .having(total > 0)
        .order_by(table.c.day.desc())
        .limit(days)
    )
    connection = target.connection() if isinstance(target, Session) else target
    rows = connection.execute(query).all()
    return [(_as_date(r[0]), int(r[1])) for r in reversed(rows)]


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))
