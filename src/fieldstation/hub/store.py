"""Writing ingested messages: idempotent on the message id, one transaction per batch.

:func:`store_batch` parses each raw payload (:func:`fieldstation.messages.parse_message`),
inserts its ``messages`` row with ``INSERT ... ON CONFLICT DO NOTHING`` and, only when that row
is new, the rows of its kind (heartbeats, detections, ...) and the station's latest state, all
set-based (one statement per table for the whole batch); a
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

from sqlalchemy import Table, case, update
from sqlalchemy.orm import Session

from fieldstation.hub.bulk import insert_rows
from fieldstation.hub.commands import apply_results
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
    CommandResultBody,
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
    stored), ``dead`` (refused, with their reasons in ``reasons``), ``detections`` (detection
    rows inserted: a detection message holds several)."""

    stored: int = 0
    duplicates: int = 0
    dead: int = 0
    reasons: list[str] | None = None
    detections: int = 0


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

    Set-based (decision 0144): one ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` of the
    message ids decides which messages are new; their rows go in with one statement per table
    (:func:`fieldstation.hub.bulk.insert_rows`: the rows as one JSON parameter on PostgreSQL,
    executemany on SQLite), and the batch's stations with one upsert, in id order (two hub
    processes lock them in one order).

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
        result.detections += part.detections
        assert result.reasons is not None
        result.reasons.extend(part.reasons or [])
    return result


def _dead_row(item: Incoming, reason: str, now: datetime) -> dict[str, Any]:
    """The ``dead_letters`` row of ``item`` refused for ``reason``."""
    return {
        "digest": hashlib.sha256(item.source.encode() + b"\0" + item.payload).hexdigest(),
        "received_at": now,
        "source": item.source[:300],
        # a topic's station part may be longer than the column: the dead letter must still
        # be stored, or the batch would be refused (and retried) for ever
        "station": None if item.expected_station is None else item.expected_station[:200],
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
                result.detections += _store_rows(
                    session, [envelopes[i] for i in envelopes if i in new], now
                )
    return result


def _insert_messages(
    session: Session, envelopes: list[Envelope], *, via: str, now: datetime
) -> set[str]:
    """Insert the ``messages`` rows (one statement); returns the ids that were new. Only the
    rows actually inserted come back from ``RETURNING`` (not ``rowcount``: decision 0081)."""
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
        for e in sorted(envelopes, key=lambda e: e.id)  # one lock order across hub processes
    ]
    table = _table(IngestedMessage)
    inserted = insert_rows(
        session.connection(),
        table,
        rows,
        conflict=lambda statement: statement.on_conflict_do_nothing(),
        returning=[table.c.message_id],
        order_by_first=True,
    )
    return {row[0] for row in inserted}


def _store_rows(session: Session, envelopes: list[Envelope], now: datetime) -> int:
    """The rows of new messages, one statement per table, and the stations' latest state in
    one upsert. Returns the number of detection rows inserted."""
    detections = 0
    tables: dict[Any, list[dict[str, Any]]] = {}
    latest: dict[str, dict[str, Any]] = {}
    newest_detection: dict[str, datetime] = {}
    newest_recording: dict[str, datetime] = {}
    results: list[tuple[str, CommandResultBody]] = []
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
        elif isinstance(body, CommandResultBody):
            results.append((station, body))
    connection = session.connection()
    for model, rows in tables.items():
        if model is Detection:
            table = _table(Detection)
            inserted = insert_rows(
                connection,
                table,
                rows,
                returning=[table.c.station, table.c.label, table.c.detected_at],
            )
            # ``inserted``: (station, label, detected_at UTC) of each detection row this
            # transaction inserted (none of a duplicate message): the per-day rollup
            # (decision 0145) counts exactly these, in the same transaction
            count_inserted(connection, inserted)
            detections = len(inserted)
        else:
            insert_rows(connection, _table(model), rows)
    _upsert_stations(
        connection,
        sorted({e.station for e in envelopes}),
        now,
        latest,
        newest_detection,
        newest_recording,
    )
    if results:  # fleet commands' states (forward only: a redelivered answer changes nothing)
        apply_results(session, results, now)
    return detections


_HEARTBEAT_COLUMNS = ("last_heartbeat_at", "health", "config_hash")


def _upsert_stations(
    connection: Any,
    stations: list[str],
    now: datetime,
    latest: dict[str, dict[str, Any]],
    newest_detection: dict[str, datetime],
    newest_recording: dict[str, datetime],
) -> None:
    """ONE ``INSERT ... ON CONFLICT (id) DO UPDATE`` for the batch's stations (sorted, so two
    hub processes lock them in one order): created when new, ``last_seen_at`` set, the newest
    heartbeat's figures kept unless the row holds a newer heartbeat, ``last_detection_at`` /
    ``last_recording_at`` moved forward only."""
    table = _table(Station)
    empty = dict.fromkeys((*_HEARTBEAT_COLUMNS, *FIGURES))
    rows = [
        {
            "id": station,
            "first_seen_at": now,
            "last_seen_at": now,
            **latest.get(station, empty),
            "last_detection_at": newest_detection.get(station),
            "last_recording_at": newest_recording.get(station),
        }
        for station in stations
    ]

    def conflict(statement: Any) -> Any:
        new = statement.excluded

        def newer(column: str) -> Any:
            return new[column].is_not(None) & (
                table.c[column].is_(None) | (table.c[column] < new[column])
            )

        heartbeat = newer("last_heartbeat_at")
        keep = {
            name: case((heartbeat, new[name]), else_=table.c[name])
            for name in (*_HEARTBEAT_COLUMNS, *FIGURES)
        }
        for name in ("last_detection_at", "last_recording_at"):
            keep[name] = case((newer(name), new[name]), else_=table.c[name])
        return statement.on_conflict_do_update(
            index_elements=[table.c.id], set_={"last_seen_at": new.last_seen_at, **keep}
        )

    insert_rows(connection, table, rows, conflict=conflict, order_by_first=True)


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
