"""Repository queries for health reports: outbox depth, last activity, summaries.

All functions run inside the caller's session and read only; times are aware UTC.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fieldstation.store.models import (
    UNFINISHED_HINT,
    Delivery,
    Detection,
    Message,
    Recording,
    unfinished,
)
from fieldstation.store.processing import in_latest_run

__all__ = [
    "OutboxDepth",
    "detection_stats",
    "detections_between",
    "last_detection_at",
    "last_recording_at",
    "last_summary_end",
    "outbox_depth",
    "pending_recordings_before",
    "recordings_in_period",
]


@dataclass(frozen=True)
class OutboxDepth:
    """Pending deliveries (one per message and destination) and the oldest one's creation time."""

    pending: int
    oldest_created_at: datetime | None


def outbox_depth(session: Session) -> OutboxDepth:
    """Count pending deliveries and find the creation time of the oldest pending message."""
    row = session.execute(
        select(func.count(Delivery.id), func.min(Message.created_at))
        .join(Message, Message.id == Delivery.message_pk)
        .where(Delivery.state == "pending")
    ).one()
    return OutboxDepth(pending=int(row[0]), oldest_created_at=row[1])


def _max_time(session: Session, column: Any) -> datetime | None:
    return session.scalars(select(column).order_by(column.desc()).limit(1)).first()


def last_recording_at(session: Session) -> datetime | None:
    """When the newest recording row was committed (UTC), or None when there is none.

    The newest row by id (primary key: O(1)); ``created_at`` is its commit time.
    """
    return session.scalars(
        select(Recording.created_at).order_by(Recording.id.desc()).limit(1)
    ).first()


def last_detection_at(session: Session) -> datetime | None:
    """Time (UTC) of the newest detection, or None when there is none."""
    return _max_time(session, Detection.detected_at)


def last_summary_end(session: Session) -> datetime | None:
    """End of the period covered by the newest ``summary`` outbox message, or None.

    The summariser remembers its progress this way (no extra table): the newest summary message
    (highest id: summaries are written in period order) names ``body.period_end`` (ISO 8601
    UTC). The outbox's purge of settled messages keeps the newest message of each kind.
    """
    payload = session.scalars(
        select(Message.payload)
        .where(Message.kind == "summary")
        .order_by(Message.id.desc())
        .limit(1)
    ).first()
    if payload is None:
        return None
    try:
        return datetime.fromisoformat(json.loads(payload)["body"]["period_end"])
    except (ValueError, KeyError, TypeError):
        return None


def detection_stats(
    session: Session, start: datetime, end: datetime
) -> list[tuple[str, int, float, float]]:
    """Per label, detections with ``start <= detected_at < end`` of the latest run of each
    processor on each recording: (label, count, max, mean score).

    Sorted by label.
    """
    rows = session.execute(
        select(
            Detection.label,
            func.count(Detection.id),
            func.max(Detection.score),
            func.avg(Detection.score),
        )
        .where(Detection.detected_at >= start, Detection.detected_at < end, in_latest_run())
        .group_by(Detection.label)
        .order_by(Detection.label)
    ).all()
    return [(str(r[0]), int(r[1]), float(r[2]), float(r[3])) for r in rows]


def detections_between(session: Session, start: datetime, end: datetime) -> int:
    """Detections with ``start <= detected_at < end`` (aware UTC) of the latest run of each
    processor on each recording: a reprocessed recording counts once."""
    return int(
        session.scalar(
            select(func.count(Detection.id)).where(
                Detection.detected_at >= start, Detection.detected_at < end, in_latest_run()
            )
        )
        or 0
    )


def recordings_in_period(session: Session, start: datetime, end: datetime) -> tuple[int, float]:
    """Recordings that started in ``[start, end)``: (count, total seconds recorded)."""
    row = session.execute(
        select(func.count(Recording.id), func.coalesce(func.sum(Recording.duration), 0.0)).where(
            Recording.started_at >= start, Recording.started_at < end
        )
    ).one()
    return int(row[0]), float(row[1])


def pending_recordings_before(session: Session, end: datetime) -> int:
    """Recordings that started before ``end`` and are not processed yet (recorded/processing)."""
    return int(
        session.scalar(
            select(func.count(Recording.id))
            .where(Recording.started_at < end, unfinished())
            .with_hint(Recording, UNFINISHED_HINT, "sqlite")
        )
        or 0
    )
