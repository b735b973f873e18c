"""Repository functions for the ``readings`` table: the values of slow sensors.

One row per value: ``(sensor, quantity, unit, measured_at, value)``; times aware UTC. The
readings job (:func:`fieldstation.recording.rows.run_readings`) inserts one batch per period
in the same transaction as its ``readings`` outbox message. A GPS stores its fixes as the
quantities ``latitude``/``longitude`` (deg) and ``elevation`` (m):
:func:`latest_position` gives the station's latest position from them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from fieldstation.store.models import Reading

__all__ = [
    "POSITION_QUANTITIES",
    "NewReading",
    "delete_older_than",
    "insert_readings",
    "latest_position",
    "readings_stats",
    "latest_values",
]

POSITION_QUANTITIES = ("latitude", "longitude", "elevation")
"""Quantities of a position fix: degrees north, degrees east (WGS84), metres above sea level."""


@dataclass(frozen=True)
class NewReading:
    """One value to insert: ``quantity`` in ``unit`` at ``measured_at`` (aware UTC)."""

    quantity: str
    unit: str
    measured_at: datetime
    value: float


def insert_readings(
    session: Session, *, deployment_id: int, sensor: str, readings: Iterable[NewReading]
) -> int:
    """Insert ``readings`` of ``sensor`` in one bulk INSERT, in the caller's transaction;
    non-finite values (NaN: not measured) are skipped. Returns the number of rows inserted.
    Raises ``ValueError`` for a naive ``measured_at``."""
    rows = [
        {
            "deployment_id": deployment_id,
            "sensor": sensor,
            "quantity": r.quantity,
            "unit": r.unit,
            "measured_at": r.measured_at,
            "value": float(r.value),
        }
        for r in readings
        if math.isfinite(r.value)
    ]
    if rows:
        session.execute(insert(Reading), rows)
    return len(rows)


def latest_values(session: Session, sensor: str | None = None) -> dict[tuple[str, str], Reading]:
    """The latest row of each ``(sensor, quantity)`` (of ``sensor`` only, when given)."""
    latest = select(
        Reading.sensor, Reading.quantity, func.max(Reading.measured_at).label("at")
    ).group_by(Reading.sensor, Reading.quantity)
    if sensor is not None:
        latest = latest.where(Reading.sensor == sensor)
    sub = latest.subquery()
    query = select(Reading).join(
        sub,
        (Reading.sensor == sub.c.sensor)
        & (Reading.quantity == sub.c.quantity)
        & (Reading.measured_at == sub.c.at),
    )
    found: dict[tuple[str, str], Reading] = {}
    for row in session.scalars(query):
        key = (row.sensor, row.quantity)
        if key not in found or row.id > found[key].id:  # two rows at one time: the last one
            found[key] = row
    return found


def delete_older_than(session: Session, before: datetime, sensor: str | None = None) -> int:
    """Delete rows measured before ``before`` (aware UTC), of ``sensor`` only when given
    (retention of readings); returns the number deleted."""
    query = delete(Reading).where(Reading.measured_at < before)
    if sensor is not None:
        query = query.where(Reading.sensor == sensor)
    result = session.execute(query)
    return int(getattr(result, "rowcount", 0) or 0)


def latest_position(session: Session) -> tuple[float, float, float | None, datetime] | None:
    """``(latitude, longitude, elevation, measured_at)`` of the latest position fix of any
    sensor (degrees, degrees, metres or None when the fix had none, aware UTC), or None when
    no fix was ever stored."""
    query = (
        select(Reading)
        .where(Reading.quantity == "latitude")
        .order_by(Reading.measured_at.desc(), Reading.id.desc())
        .limit(1)
    )
    latitude = session.scalars(query).first()
    if latitude is None:
        return None
    same = select(Reading).where(
        Reading.sensor == latitude.sensor,
        Reading.measured_at == latitude.measured_at,
        Reading.quantity.in_(("longitude", "elevation")),
    )
    values = {row.quantity: row.value for row in session.scalars(same)}
    if "longitude" not in values:
        return None
    return latitude.value, values["longitude"], values.get("elevation"), latitude.measured_at


def readings_stats(
    session: Session, start: datetime, end: datetime
) -> list[tuple[str, str, str, int, float, float, float]]:
    """``(sensor, quantity, unit, count, min, max, mean)`` of the values measured in ``[start,
    end)`` (aware UTC), one tuple per sensor and quantity, sorted; for summaries."""
    query = (
        select(
            Reading.sensor,
            Reading.quantity,
            Reading.unit,
            func.count(),
            func.min(Reading.value),
            func.max(Reading.value),
            func.avg(Reading.value),
        )
        .where(Reading.measured_at >= start, Reading.measured_at < end)
        .group_by(Reading.sensor, Reading.quantity, Reading.unit)
        .order_by(Reading.sensor, Reading.quantity, Reading.unit)
    )
    return [
        (sensor, quantity, unit, int(n), float(low), float(high), float(mean))
        for sensor, quantity, unit, n, low, high, mean in session.execute(query)
    ]
