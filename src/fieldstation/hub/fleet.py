"""What the dashboard shows, read from the fleet database: the fleet (one row per station),
one station, the detections explorer (keyset pages, counts per day, CSV) and the alerts.

Every function takes the database and returns plain dicts and lists (JSON-ready with
:func:`jsonable`); times are aware UTC datetimes. Nothing here scans a big table: the fleet
reads ``stations`` (the newest heartbeat's figures are kept on its rows) and open alerts;
the explorer reads one keyset page along ``(detected_at, id)`` (index
``ix_detections_detected_id``, or the station/label indexes when filtered).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, desc, func, or_, select

from fieldstation.hub import rollup
from fieldstation.hub.alerts import AlertRules, evaluate, station_state
from fieldstation.hub.commands import list_commands
from fieldstation.hub.db import HubDatabase
from fieldstation.hub.models import (
    Alert,
    Detection,
    Event,
    Heartbeat,
    HubCommand,
    Recording,
    Station,
)

__all__ = [
    "DetectionFilter",
    "alerts",
    "detection_counts_per_day",
    "detection_page",
    "detections_csv",
    "fleet",
    "jsonable",
    "station_detail",
]

PAGE = 100
"""Detections per explorer page."""
FAILED_COMMANDS_WINDOW = 86400.0
"""Seconds the fleet page counts refused and expired commands."""


def jsonable(value: Any) -> Any:
    """``value`` with datetimes as ISO 8601 strings (recursively through dicts and lists)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def fleet(db: HubDatabase, now: datetime, rules: AlertRules) -> list[dict[str, Any]]:
    """One dict per station, sorted by id: ``presence`` (online / offline / unknown, from the
    retained status), ``activity`` (heartbeat_missing / silent by the alert rules, else
    recording when recordings have arrived and it is not offline, else None),
    ``health`` (ok / degraded / failing, the newest heartbeat), ``reasons``, ``disk_percent``,
    ``disk_free`` (bytes), ``battery_percent``, ``outbox_pending``, ``last_detection_at``,
    ``last_recording_at``, ``last_heartbeat_at``, ``config_hash``, ``open_alerts``
    (count), ``failed_jobs`` (names), ``commands_pending`` (fleet commands queued, delivered
    or accepted) and ``commands_failed`` (refused or expired in the last
    :data:`FAILED_COMMANDS_WINDOW` seconds)."""
    with db.session() as session:
        rows = session.execute(select(*Station.__table__.c).order_by(Station.id)).all()
        open_counts = dict(
            session.execute(
                select(Alert.station, func.count())
                .where(Alert.closed_at.is_(None))
                .group_by(Alert.station)
            ).all()
        )
        pending = dict(
            session.execute(
                select(HubCommand.station, func.count())
                .where(HubCommand.state.in_(("queued", "delivered", "accepted")))
                .group_by(HubCommand.station)
            ).all()
        )
        failed = dict(
            session.execute(
                select(HubCommand.station, func.count())
                .where(
                    HubCommand.state.in_(("refused", "expired")),
                    HubCommand.updated_at >= now - timedelta(seconds=FAILED_COMMANDS_WINDOW),
                )
                .group_by(HubCommand.station)
            ).all()
        )
    by_station: dict[str, set[str]] = {}
    for c in evaluate((station_state(r) for r in rows), now, rules):
        by_station.setdefault(c.station, set()).add(c.kind)
    result = []
    for r in rows:
        kinds = by_station.get(r.id, set())
        presence = "unknown" if r.online is None else ("online" if r.online else "offline")
        activity: str | None = next(
            (k for k in ("heartbeat_missing", "silent") if k in kinds), None
        )
        if activity is None and presence != "offline" and r.last_recording_at is not None:
            activity = "recording"
        result.append(
            {
                "id": r.id,
                "presence": presence,
                "status_changed_at": r.status_changed_at,
                "activity": activity,
                "health": r.health,
                "reasons": r.reasons or [],
                "disk_percent": r.disk_percent,
                "disk_free": r.disk_free,
                "battery_percent": r.battery_percent,
                "outbox_pending": r.outbox_pending,
                "last_detection_at": r.last_detection_at,
                "last_recording_at": r.last_recording_at,
                "last_heartbeat_at": r.last_heartbeat_at,
                "last_seen_at": r.last_seen_at,
                "config_hash": r.config_hash,
                "open_alerts": int(open_counts.get(r.id, 0)),
                "commands_pending": int(pending.get(r.id, 0)),
                "commands_failed": int(failed.get(r.id, 0)),
                "failed_jobs": sorted(
                    str(j.get("name"))
                    for j in (r.jobs or [])
                    if j.get("state") in ("failed", "config_error", "hung")
                ),
            }
        )
    return result


def _series(body: dict[str, Any]) -> dict[str, float | None]:
    metrics = body.get("metrics") or {}
    host = metrics.get("host") or {}
    battery = metrics.get("battery") or {}
    outbox = metrics.get("outbox") or {}
    return {
        "disk_percent": host.get("disk_percent"),
        "cpu_percent": host.get("cpu_percent"),
        "memory_percent": host.get("memory_percent"),
        "cpu_temp_c": host.get("cpu_temp_c"),
        "battery_percent": battery.get("percent"),
        "outbox_pending": outbox.get("pending"),
    }


def station_detail(
    db: HubDatabase, station: str, *, heartbeats: int = 500
) -> dict[str, Any] | None:
    """Everything the station page shows, or None for an unknown station: ``station`` (its
    row as a dict), ``series`` (the newest ``heartbeats`` heartbeats, oldest first: ``at``,
    ``status`` and the figures of :func:`_series`), ``jobs``, ``recordings`` and
    ``detections`` (newest 20), ``events`` (newest 50), ``alerts`` (newest 20), ``commands``
    (newest 20 fleet commands: :func:`fieldstation.hub.commands.list_commands`)."""
    with db.session() as session:
        row = session.get(Station, station)
        if row is None:
            return None
        beats = session.execute(
            select(Heartbeat.created_at, Heartbeat.status, Heartbeat.body)
            .where(Heartbeat.station == station)
            .order_by(desc(Heartbeat.created_at))
            .limit(heartbeats)
        ).all()
        recordings = session.scalars(
            select(Recording)
            .where(Recording.station == station)
            .order_by(desc(Recording.started_at))
            .limit(20)
        ).all()
        detections = session.scalars(
            select(Detection)
            .where(Detection.station == station)
            .order_by(desc(Detection.detected_at), desc(Detection.id))
            .limit(20)
        ).all()
        events = session.scalars(
            select(Event).where(Event.station == station).order_by(desc(Event.created_at)).limit(50)
        ).all()
        station_alerts = session.scalars(
            select(Alert).where(Alert.station == station).order_by(desc(Alert.id)).limit(20)
        ).all()
    columns = [c.name for c in Station.__table__.columns]
    return {
        "station": {c: getattr(row, c) for c in columns},
        "series": [
            {"at": b.created_at, "status": b.status, **_series(b.body)} for b in reversed(beats)
        ],
        "jobs": row.jobs or [],
        "recordings": [
            {
                "started_at": r.started_at,
                "sensor": r.sensor,
                "duration": r.duration,
                "media": r.media,
                "bytes": r.bytes,
                "path": r.path,
            }
            for r in recordings
        ],
        "detections": [_detection(d) for d in detections],
        "events": [
            {
                "at": e.created_at,
                "event": e.event,
                "severity": e.severity,
                "source": e.source,
                "message": e.message,
            }
            for e in events
        ],
        "alerts": [_alert(a) for a in station_alerts],
        "commands": list_commands(db, station, limit=20),
    }


def _detection(d: Detection) -> dict[str, Any]:
    return {
        "id": d.id,
        "station": d.station,
        "detected_at": d.detected_at,
        "label": d.label,
        "score": d.score,
        "model": d.model,
        "sensor": d.sensor,
        "recording_id": d.recording_id,
        "start": d.start,
        "end": d.end,
    }


def _alert(a: Alert) -> dict[str, Any]:
    return {
        "id": a.id,
        "station": a.station,
        "kind": a.kind,
        "subject": a.subject,
        "detail": a.detail,
        "opened_at": a.opened_at,
        "acknowledged_at": a.acknowledged_at,
        "acknowledged_by": a.acknowledged_by,
        "closed_at": a.closed_at,
    }


@dataclass(frozen=True)
class DetectionFilter:
    """The explorer's filters: exact ``label`` and ``station``, ``since`` (inclusive) and
    ``until`` (exclusive) on ``detected_at``; None: any."""

    label: str | None = None
    station: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> list[Any]:
        clauses: list[Any] = []
        if self.label:
            clauses.append(Detection.label == self.label)
        if self.station:
            clauses.append(Detection.station == self.station)
        if self.since:
            clauses.append(Detection.detected_at >= self.since)
        if self.until:
            clauses.append(Detection.detected_at < self.until)
        return clauses


def detection_page(
    db: HubDatabase,
    filters: DetectionFilter,
    *,
    before: tuple[datetime, int] | None = None,
    limit: int = PAGE,
) -> tuple[list[dict[str, Any]], tuple[datetime, int] | None]:
    """One page of detections, newest first, strictly older than ``before`` =
    (detected_at, id) (keyset: the cost of page 1,000 is the cost of page 1); returns the
    page and the key of the next page (None at the end)."""
    clauses = filters.where()
    if before is not None:
        at, row_id = before
        clauses.append(
            or_(
                Detection.detected_at < at,
                and_(Detection.detected_at == at, Detection.id < row_id),
            )
        )
    with db.session() as session:
        rows = session.scalars(
            select(Detection)
            .where(*clauses)
            .order_by(desc(Detection.detected_at), desc(Detection.id))
            .limit(limit + 1)
        ).all()
    page = [_detection(d) for d in rows[:limit]]
    following = (rows[limit - 1].detected_at, rows[limit - 1].id) if len(rows) > limit else None
    return page, following


def detection_counts_per_day(
    db: HubDatabase, filters: DetectionFilter, *, days: int = 60
) -> list[tuple[str, int]]:
    """Detections per UTC day (``YYYY-MM-DD``, count), oldest first, the newest ``days``
    days that have any under ``filters``, read from the rollup
    (:mod:`fieldstation.hub.rollup`: a few rows per day, whatever the number of detections).
    Whole UTC days: from the day of ``since`` to the day of ``until`` (exclusive: a midnight
    ``until`` ends the day before)."""
    first = filters.since.astimezone(UTC).date() if filters.since else None
    last = None
    if filters.until is not None:
        until = filters.until.astimezone(UTC)
        last = until.date() - timedelta(days=1) if until.time() == time(0) else until.date()
    with db.session() as session:
        rows = rollup.counts_per_day(
            session,
            station=filters.station,
            label=filters.label,
            first=first,
            last=last,
            days=days,
        )
    return [(day.isoformat(), count) for day, count in rows]


CSV_COLUMNS = (
    "id",
    "station",
    "detected_at",
    "label",
    "score",
    "model",
    "sensor",
    "recording_id",
    "start",
    "end",
)


def detections_csv(
    db: HubDatabase, filters: DetectionFilter, *, batch: int = 5000
) -> Iterator[str]:
    """CSV text (header, then one line per detection, newest first) in chunks, read in
    keyset batches of ``batch`` rows (memory stays flat for millions of rows)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    before: tuple[datetime, int] | None = None
    while True:
        page, before = detection_page(db, filters, before=before, limit=batch)
        for d in page:
            writer.writerow(
                [d["detected_at"].isoformat() if c == "detected_at" else d[c] for c in CSV_COLUMNS]
            )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if before is None:
            return


def alerts(db: HubDatabase, *, open_only: bool = False, limit: int = 200) -> list[dict[str, Any]]:
    """The newest ``limit`` alerts (open ones only with ``open_only``), newest first."""
    with db.session() as session:
        query = select(Alert).order_by(desc(Alert.opened_at), desc(Alert.id)).limit(limit)
        if open_only:
            query = query.where(Alert.closed_at.is_(None))
        return [_alert(a) for a in session.scalars(query).all()]
