"""Repository functions for events: a row in ``events`` plus an outbox message, one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from fieldstation.store.models import Event
from fieldstation.store.outbox import enqueue

__all__ = ["Severity", "record_event", "recent_events"]

Severity = Literal["info", "warning", "error"]


def record_event(
    session: Session,
    *,
    kind: str,
    source: str,
    message: str,
    now: datetime,
    station_id: str,
    destinations: Sequence[str],
    severity: Severity = "info",
    data: dict[str, Any] | None = None,
) -> Event:
    """Store an event and enqueue it (kind ``event``, top priority) for ``destinations``."""
    event = Event(
        created_at=now,
        kind=kind,
        severity=severity,
        source=source,
        message=message,
        data=data or {},
    )
    session.add(event)
    session.flush()
    body: dict[str, Any] = {
        "event": kind,
        "severity": severity,
        "source": source,
        "message": message,
        "data": data or {},
        "event_id": event.id,
    }
    enqueue(
        session, kind="event", body=body, destinations=destinations, now=now, station_id=station_id
    )
    return event


def recent_events(session: Session, limit: int = 50) -> list[Event]:
    """The newest ``limit`` events, newest first."""
    return list(session.scalars(select(Event).order_by(Event.id.desc()).limit(limit)))
