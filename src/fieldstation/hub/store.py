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

from sqlalchemy import Table, bindparam, update
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
from fieldstation.hub.rollup import count_inserted
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
    Raises the database's transient errors (connection lost, ...) unchanged.

    Set-based: one multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` of the message
    ids decides which messages are new; their rows go in with one executemany per table.

    A message that passes its schema but breaks a rule of the database (a value its column
    cannot hold) would fail the whole batch for ever: when the database refuses the batch
    with an integrity or data error, each message is stored on its own, and the one it
    refuses becomes a dead letter with the database's reason, so the rest get through."""
    from sqlalchemy.exc import DataError, IntegrityError

    now = now or datetime.now(UTC)
    try:
        return _store_batch(db, batch, via=via, now=now)
    except (IntegrityError, DataError) as error:
        if len(batch) == 1:
            reason = "the database refused it: " + (str(error.orig) or str(error)).splitlines()[0]
            with db.session() as session:
                session.execute(
                    _insert(session, _table(DeadLetter)).on_conflict_do_nothing(),
                    [_dead_row(batch[0], reason[:500], now)],
                )
            return BatchResult(dead=1, reasons=[reason])
    result = BatchResult(reasons=[])
    for item in batch:
        part = store_batch(db, [item], via=via, now=now)
        result.stored += part.stored
        result.duplicates += part.duplicates
        result.dead += part.dead
        assert result.reasons is not None
        result.reasons.extend(part.reasons or [])
    return result


def _dead_row(item: Incoming, reason: str, now: datetime) -> dict[str, Any]:
    """The ``dead_letters`` row of ``item`` refused for ``reason``."""
    return {
        "digest": hashlib.sha256(item.source.encode() + b"\0" + item.payload).hexdigest(),
        "received_at": now,
        "source": item.source[:300],
        "station": item.expected_station,
        "reason": reason,
        "payload": item.payload,
    }


def _store_batch(
    db: HubDatabase, batch: Sequence[Incoming], *, via: str, now: datetime
) -> BatchResult:
    result = BatchResult(reasons=[])
    envelopes: dict[str, Envelope] = {}
    dead: list[dict[str, Any]] = []
    for item in batch:
        try:
            envelope = parse_message(item.payload)
            if item.expected_station is not None and envelope.station != item.expected_station:
                raise MessageError(
                    f"station {envelope.station!r} in the envelope, but {item.source} is "
                    f"{item.expected_station!r}'s"
                )
        except MessageError as error:
            dead.append(_dead_row(item, error.reason, now))
            result.dead += 1
            assert result.reasons is not None
            result.reasons.append(error.reason)
            continue
        if envelope.id in envelopes:
            result.duplicates += 1  # twice in one batch
        else:
            envelopes[envelope.id] = envelope
    with db.session() as session:
        if dead:
            unique = {row["digest"]: row for row in dead}
            session.execute(
                _insert(session, _table(DeadLetter)).on_conflict_do_nothing(),
                list(unique.values()),
            )
        if envelopes:
            new = _insert_messages(session, list(envelopes.values()), via=via, now=now)
            result.stored += len(new)
            result.duplicates += len(envelopes) - len(new)
            if new:
                _store_rows(session, [envelopes[i] for i in envelopes if i in new], now)
    return result


def _insert_messages(
    session: Session, envelopes: list[Envelope], *, via: str, now: datetime
) -> set[str]:
    """Insert the ``messages`` rows; returns the ids that were new."""
    rows = [
        {
            "message_id": e.id,
            "station": e.station,
            "kind": e.kind,
            "schema_version": e.schema_version,
            "created_at": e.created_at,
            "received_at": now,
            "received_via": via[:200],
        }
        for e in envelopes
    ]
    table = _table(IngestedMessage)
    # executemany with RETURNING: SQLAlchemy's "insertmanyvalues" sends multi-row INSERTs from
    # one cached statement; only the rows actually inserted come back
    statement = _insert(session, table).on_conflict_do_nothing().returning(table.c.message_id)
    return set(session.connection().execute(statement, rows).scalars())


def _store_rows(session: Session, envelopes: list[Envelope], now: datetime) -> None:
    """The rows of new messages, one executemany per table, and the stations' latest state."""
    tables: dict[Any, list[dict[str, Any]]] = {}
    latest: dict[str, dict[str, Any]] = {}
    newest_detection: dict[str, datetime] = {}
    newest_recording: dict[str, datetime] = {}
    for envelope in envelopes:
        station, mid, body = envelope.station, envelope.id, envelope.body
        if isinstance(body, HeartbeatBody):
            tables.setdefault(Heartbeat, []).append(
                {
                    "message_id": mid,
                    "station": station,
                    "created_at": envelope.created_at,
                    "status": body.status,
                    "seq": body.seq,
                    "body": body.model_dump(mode="json"),
                }
            )
            newest = latest.get(station)
            if newest is None or newest["last_heartbeat_at"] < envelope.created_at:
                latest[station] = {
                    "last_heartbeat_at": envelope.created_at,
                    "health": body.status,
                    "config_hash": body.config_hash_in_force,
                    **_heartbeat_figures(body),
                }
        elif isinstance(body, DetectionBody):
            for item in body.detections:
                _newest(newest_detection, station, item.detected_at)
            tables.setdefault(Detection, []).extend(
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
            )
        elif isinstance(body, RecordingBody):
            _newest(newest_recording, station, body.started_at)
            tables.setdefault(Recording, []).append(
                {
                    "message_id": mid,
                    "station": station,
                    "recording_id": body.recording_id,
                    "sensor": body.sensor,
                    "path": body.path,
                    "started_at": body.started_at,
                    "duration": body.duration,
                    "media": body.media,
                    "bytes": body.bytes,
                    "sha256": body.sha256,
                    "body": body.model_dump(mode="json"),
                }
            )
        elif isinstance(body, EventBody):
            tables.setdefault(Event, []).append(
                {
                    "message_id": mid,
                    "station": station,
                    "created_at": envelope.created_at,
                    "event": body.event,
                    "severity": body.severity,
                    "source": body.source,
                    "message": body.message,
                    "data": body.data,
                }
            )
        elif isinstance(body, SummaryBody):
            tables.setdefault(Summary, []).append(
                {
                    "message_id": mid,
                    "station": station,
                    "period_start": body.period_start,
                    "period_end": body.period_end,
                    "body": body.model_dump(mode="json"),
                }
            )
        elif isinstance(body, ReadingsBody):
            tables.setdefault(Reading, []).extend(
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
            )
    stations = sorted({e.station for e in envelopes})
    session.execute(
        _insert(session, _table(Station)).on_conflict_do_nothing(),
        [{"id": s, "first_seen_at": now, "last_seen_at": now} for s in stations],
    )
    for model, rows in tables.items():
        if rows:
            session.execute(_insert(session, _table(model)), rows)  # Core executemany
    # detection rollup (decision 0145), same transaction: exactly the detection rows inserted
    # just above (only new messages get rows, so a redelivery counts nothing)
    count_inserted(session, tables.get(Detection, ()))
    session.execute(update(Station).where(Station.id.in_(stations)).values(last_seen_at=now))
    if latest:  # one executemany: the newest heartbeat of each station, unless older news
        table = _table(Station)
        session.connection().execute(
            update(table)
            .where(
                table.c.id == bindparam("sid"),
                (table.c.last_heartbeat_at.is_(None))
                | (table.c.last_heartbeat_at < bindparam("at")),
            )
            .values(
                last_heartbeat_at=bindparam("at"),
                health=bindparam("health"),
                config_hash=bindparam("config_hash"),
                **{name: bindparam(f"p_{name}") for name in FIGURES},
            ),
            [
                {
                    "sid": station,
                    "at": values["last_heartbeat_at"],
                    "health": values["health"],
                    "config_hash": values["config_hash"],
                    **{f"p_{name}": values[name] for name in FIGURES},
                }
                for station, values in latest.items()
            ],
        )
    for column, newest in (
        ("last_detection_at", newest_detection),
        ("last_recording_at", newest_recording),
    ):
        if newest:
            table = _table(Station)
            session.connection().execute(
                update(table)
                .where(
                    table.c.id == bindparam("sid"),
                    (table.c[column].is_(None)) | (table.c[column] < bindparam("at")),
                )
                .values({column: bindparam("at")}),
                [{"sid": station, "at": at} for station, at in newest.items()],
            )


FIGURES = (
    "heartbeat_interval",
    "reasons",
    "disk_free",
    "disk_percent",
    "battery_percent",
    "outbox_pending",
    "jobs",
)
"""The newest heartbeat's figures kept on the ``stations`` row (see :func:`_heartbeat_figures`)."""


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _heartbeat_figures(body: HeartbeatBody) -> dict[str, Any]:
    """The fleet page's figures of one heartbeat: interval (s), reasons, disk free (bytes) and
    used (%), battery (%), outbox pending (messages), jobs (name, state, restarts, ...)."""
    metrics = body.metrics
    disk_free = _number(metrics.host.get("disk_free"))
    pending = _number(metrics.outbox.get("pending"))
    return {
        "heartbeat_interval": body.interval,
        "reasons": list(body.reasons),
        "disk_free": None if disk_free is None else int(disk_free),
        "disk_percent": _number(metrics.host.get("disk_percent")),
        "battery_percent": _number((metrics.battery or {}).get("percent")),
        "outbox_pending": None if pending is None else int(pending),
        "jobs": [
            {k: job.get(k) for k in ("name", "state", "restarts", "reason", "problem")}
            for job in metrics.jobs
        ],
    }


def _newest(newest: dict[str, datetime], station: str, at: datetime) -> None:
    if station not in newest or newest[station] < at:
        newest[station] = at


def _touch_station(session: Session, station: str, now: datetime) -> None:
    session.execute(
        _insert(session, _table(Station))
        .values(id=station, first_seen_at=now, last_seen_at=now)
        .on_conflict_do_nothing()
    )


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
