"""Writing ingested messages: idempotent on the message id, one transaction per batch.

:func:`store_batch` parses each raw payload (:func:`fieldstation.messages.parse_message`),
inserts its ``messages`` row with ``INSERT ... ON CONFLICT DO NOTHING`` and, only when that row
is new, the rows of its kind (heartbeats, detections, ...) and the station's latest state; a
refused payload becomes one ``dead_letters`` row (idempotent on its digest). Everything of the
batch commits together, so the caller may acknowledge all of it after the commit and none of
it before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, update
from sqlalchemy.orm import Session

from fieldstation.hub.db import HubDatabase
from fieldstation.hub.models import (
    DeadLetter,
    Detection,
    Event,
    Heartbeat,
    IngestedMessage,
    Reading,
    Recording,
    Station,
    Summary,
)
from fieldstation.messages import (
    DetectionBody,
    Envelope,
    EventBody,
    HeartbeatBody,
    MessageError,
    ReadingsBody,
    RecordingBody,
    SummaryBody,
    parse_message,
)

__all__ = ["BatchResult", "Incoming", "set_station_status", "store_batch"]


@dataclass(frozen=True)
class Incoming:
    """One raw message to store: ``payload`` (the envelope's bytes), ``source`` (``mqtt:<topic>``
    or ``http:<station>``, for dead letters) and ``expected_station`` (the station the topic or
    the token names; a different ``station`` in the envelope is refused), or None."""

    payload: bytes
    source: str
    expected_station: str | None = None


@dataclass
class BatchResult:
    """What one :func:`store_batch` did: ``stored`` new messages, ``duplicates`` (already
    stored), ``dead`` (refused, with their reasons in ``reasons``)."""

    stored: int = 0
    duplicates: int = 0
    dead: int = 0
    reasons: list[str] | None = None


def _insert(session: Session, table: Table) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _table(model: Any) -> Table:
    return model.__table__  # type: ignore[no-any-return]


def store_batch(
    db: HubDatabase, batch: Sequence[Incoming], *, via: str, now: datetime | None = None
) -> BatchResult:
    """Store ``batch`` in ONE transaction (committed when this returns; an exception rolls all
    of it back: acknowledge nothing then). ``via``: ``mqtt:<client id>`` or ``http``.
    Raises the database's errors (connection lost, ...) unchanged."""
    now = now or datetime.now(UTC)
    result = BatchResult(reasons=[])
    with db.session() as session:
        for item in batch:
            try:
                envelope = parse_message(item.payload)
                if item.expected_station is not None and envelope.station != item.expected_station:
                    raise MessageError(
                        f"station {envelope.station!r} in the envelope, but {item.source} is "
                        f"{item.expected_station!r}'s"
                    )
            except MessageError as error:
                _dead_letter(session, item, error.reason, now)
                result.dead += 1
                assert result.reasons is not None
                result.reasons.append(error.reason)
                continue
            if _store_one(session, envelope, via=via, now=now):
                result.stored += 1
            else:
                result.duplicates += 1
    return result


def _dead_letter(session: Session, item: Incoming, reason: str, now: datetime) -> None:
    digest = hashlib.sha256(item.source.encode() + b"\0" + item.payload).hexdigest()
    session.execute(
        _insert(session, _table(DeadLetter))
        .values(
            digest=digest,
            received_at=now,
            source=item.source[:300],
            station=item.expected_station,
            reason=reason,
            payload=item.payload,
        )
        .on_conflict_do_nothing()
    )


def _touch_station(session: Session, station: str, now: datetime) -> None:
    session.execute(
        _insert(session, _table(Station))
        .values(id=station, first_seen_at=now, last_seen_at=now)
        .on_conflict_do_nothing()
    )


def _store_one(session: Session, envelope: Envelope, *, via: str, now: datetime) -> bool:
    """Insert one parsed message; False when its id was already stored."""
    inserted = session.execute(
        _insert(session, _table(IngestedMessage))
        .values(
            message_id=envelope.id,
            station=envelope.station,
            kind=envelope.kind,
            schema_version=envelope.schema_version,
            created_at=envelope.created_at,
            received_at=now,
            received_via=via[:200],
        )
        .on_conflict_do_nothing()
        .returning(_table(IngestedMessage).c.message_id)
    )
    if inserted.first() is None:  # the id was already stored: nothing more to write
        return False
    station, mid, body = envelope.station, envelope.id, envelope.body
    _touch_station(session, station, now)
    changes: dict[str, Any] = {"last_seen_at": now}
    if isinstance(body, HeartbeatBody):
        session.add(
            Heartbeat(
                message_id=mid,
                station=station,
                created_at=envelope.created_at,
                status=body.status,
                seq=body.seq,
                body=body.model_dump(mode="json"),
            )
        )
        changes.update(
            last_heartbeat_at=envelope.created_at,
            health=body.status,
            config_hash=body.config_hash_in_force,
        )
    elif isinstance(body, DetectionBody):
        rows = [
            {
                "message_id": mid,
                "station": station,
                "recording_id": body.recording_id,
                "sensor": body.sensor,
                "processor": body.processor,
                "model": body.model,
                "model_version": body.model_version,
                "label": item.label,
                "score": item.score,
                "start": item.start,
                "end": item.end,
                "low_hz": item.low_hz,
                "high_hz": item.high_hz,
                "detected_at": item.detected_at,
                "extra": item.extra,
            }
            for item in body.detections
        ]
        if rows:
            session.execute(_insert(session, _table(Detection)), rows)
    elif isinstance(body, RecordingBody):
        session.add(
            Recording(
                message_id=mid,
                station=station,
                recording_id=body.recording_id,
                sensor=body.sensor,
                path=body.path,
                started_at=body.started_at,
                duration=body.duration,
                media=body.media,
                bytes=body.bytes,
                sha256=body.sha256,
                body=body.model_dump(mode="json"),
            )
        )
    elif isinstance(body, EventBody):
        session.add(
            Event(
                message_id=mid,
                station=station,
                created_at=envelope.created_at,
                event=body.event,
                severity=body.severity,
                source=body.source,
                message=body.message,
                data=body.data,
            )
        )
    elif isinstance(body, SummaryBody):
        session.add(
            Summary(
                message_id=mid,
                station=station,
                period_start=body.period_start,
                period_end=body.period_end,
                body=body.model_dump(mode="json"),
            )
        )
    elif isinstance(body, ReadingsBody):
        values = [
            {
                "message_id": mid,
                "station": station,
                "sensor": body.sensor,
                "quantity": quantity,
                "unit": body.units.get(quantity),
                "measured_at": body.measured_at,
                "value": value,
            }
            for quantity, value in body.values.items()
        ]
        if values:
            session.execute(_insert(session, _table(Reading)), values)
    session.flush()
    session.execute(update(Station).where(Station.id == station).values(**changes))
    return True


def set_station_status(
    db: HubDatabase, station: str, online: bool, *, now: datetime | None = None
) -> None:
    """Record the retained ``status`` of ``station`` (``online``/``offline``), creating it."""
    now = now or datetime.now(UTC)
    with db.session() as session:
        _touch_station(session, station, now)
        session.execute(
            update(Station)
            .where(Station.id == station, (Station.online.is_(None)) | (Station.online != online))
            .values(online=online, status_changed_at=now)
        )
        session.execute(update(Station).where(Station.id == station).values(last_seen_at=now))
