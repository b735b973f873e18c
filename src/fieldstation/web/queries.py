"""The web page's reads of the station database: small, keyset-paginated, indexed.

Every list is ordered newest first by ``(time, id)`` and continues *before* the last row shown
(a keyset cursor, :class:`Cursor`), so page 1000 costs what page 1 costs: no ``OFFSET``.

- recordings of one sensor: ``ix_recordings_sensor_started (sensor, started_at)``;
  of every sensor: the primary key (ids grow with commits, so ``id`` order is time order
  within a few chunks) with the day's range on ``started_at``;
- detections: ``ix_detections_detected_at``; of one label ``ix_detections_label_score`` narrows
  the rows first; a recording's detections ``ix_detections_recording_id``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from fieldstation.store.models import Detection, Event, Recording

__all__ = [
    "Cursor",
    "DetectionRow",
    "RecordingRow",
    "day_range",
    "detection",
    "detections_page",
    "iter_detections",
    "labels",
    "recent_events",
    "recording",
    "recording_detections",
    "recordings_page",
]

PAGE = 50
"""Rows per page."""


class BadCursorError(ValueError):
    """A ``before=`` cursor that was not made by :meth:`Cursor.encode`."""


@dataclass(frozen=True)
class Cursor:
    """Where a page ends: the ``(time, id)`` of its last row; the next page is older."""

    at: datetime
    id: int

    def encode(self) -> str:
        """URL-safe text for ``?before=``."""
        text = f"{self.at.isoformat()}|{self.id}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Raises :class:`BadCursorError` for text :meth:`encode` did not make."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            at, _, ident = raw.partition("|")
            moment = datetime.fromisoformat(at)
            if moment.tzinfo is None:
                raise ValueError("naive time")
            return cls(moment.astimezone(UTC), int(ident))
        except (ValueError, UnicodeDecodeError) as error:
            raise BadCursorError(f"bad page cursor {text!r}") from error


def day_range(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """UTC start and end of the station-local calendar day ``day``."""
    start = datetime.combine(day, time(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


@dataclass(frozen=True)
class RecordingRow:
    """One line of the recordings page."""

    recording: Recording
    detections: int


@dataclass(frozen=True)
class DetectionRow:
    """One line of the detections page (with its recording's sensor and path)."""

    detection: Detection
    sensor: str
    media: str
    file_state: str


def _detection_count() -> Any:
    return (
        select(func.count(Detection.id))
        .where(Detection.recording_id == Recording.id)
        .correlate(Recording)
        .scalar_subquery()
    )


def recordings_page(
    session: Session,
    *,
    sensor: str | None = None,
    span: tuple[datetime, datetime] | None = None,
    before: Cursor | None = None,
    limit: int = PAGE,
) -> tuple[list[RecordingRow], Cursor | None]:
    """Recordings newest first (of ``sensor``; started within ``span``), continuing before
    ``before``; returns the rows and the cursor of the next page (None on the last)."""
    query: Any = select(Recording, _detection_count())
    order: tuple[Any, ...]
    if sensor is not None:
        query = query.where(Recording.sensor == sensor)
        order = (Recording.started_at.desc(), Recording.id.desc())
        if before is not None:
            query = query.where(
                or_(
                    Recording.started_at < before.at,
                    and_(Recording.started_at == before.at, Recording.id < before.id),
                )
            )
    else:
        order = (Recording.id.desc(),)
        if before is not None:
            query = query.where(Recording.id < before.id)
    if span is not None:
        query = query.where(Recording.started_at >= span[0], Recording.started_at < span[1])
    found = session.execute(query.order_by(*order).limit(limit + 1)).all()
    rows = [RecordingRow(rec, count or 0) for rec, count in found[:limit]]
    more = len(found) > limit
    last = rows[-1].recording if rows else None
    return rows, Cursor(last.started_at, last.id) if more and last is not None else None


def recording(session: Session, recording_id: int) -> Recording | None:
    """The recording ``recording_id`` or None."""
    return session.get(Recording, recording_id)


def recording_detections(session: Session, recording_id: int, limit: int = 200) -> list[Detection]:
    """The detections in one recording, by start time."""
    query = (
        select(Detection)
        .where(Detection.recording_id == recording_id)
        .order_by(Detection.start, Detection.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def _detections_query(
    label: str | None, span: tuple[datetime, datetime] | None, before: Cursor | None
) -> Select[Any]:
    query: Any = select(Detection, Recording.sensor, Recording.media, Recording.file_state).join(
        Recording, Recording.id == Detection.recording_id
    )
    if label is not None:
        query = query.where(Detection.label == label)
    if span is not None:
        query = query.where(Detection.detected_at >= span[0], Detection.detected_at < span[1])
    if before is not None:
        query = query.where(
            or_(
                Detection.detected_at < before.at,
                and_(Detection.detected_at == before.at, Detection.id < before.id),
            )
        )
    return query.order_by(Detection.detected_at.desc(), Detection.id.desc())


def detections_page(
    session: Session,
    *,
    label: str | None = None,
    span: tuple[datetime, datetime] | None = None,
    before: Cursor | None = None,
    limit: int = PAGE,
) -> tuple[list[DetectionRow], Cursor | None]:
    """Detections newest first (of ``label``, within ``span``), continuing before ``before``."""
    found = session.execute(_detections_query(label, span, before).limit(limit + 1)).all()
    rows = [DetectionRow(d, sensor, media, state) for d, sensor, media, state in found[:limit]]
    more = len(found) > limit
    last = rows[-1].detection if rows else None
    return rows, Cursor(last.detected_at, last.id) if more and last is not None else None


def iter_detections(
    session: Session,
    *,
    label: str | None = None,
    span: tuple[datetime, datetime] | None = None,
    batch: int = 1000,
) -> Iterator[DetectionRow]:
    """Every detection matching, newest first, read ``batch`` rows at a time (CSV export)."""
    before: Cursor | None = None
    while True:
        rows, before = detections_page(session, label=label, span=span, before=before, limit=batch)
        yield from rows
        if before is None:
            return


def detection(session: Session, detection_id: int) -> Detection | None:
    """The detection ``detection_id`` (its ``recording`` loads on access) or None."""
    return session.get(Detection, detection_id)


def labels(session: Session, limit: int = 500) -> list[str]:
    """Distinct detection labels, alphabetical (read from ``ix_detections_label_score``)."""
    query = select(Detection.label).distinct().order_by(Detection.label).limit(limit)
    return list(session.scalars(query))


def recent_events(session: Session, limit: int = 20) -> list[Event]:
    """The newest ``limit`` events, newest first."""
    return list(session.scalars(select(Event).order_by(Event.id.desc()).limit(limit)))
