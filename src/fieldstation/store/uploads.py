"""Repository of the ``uploads`` table: which files go to the hub, and what the hub confirmed.

Set-based SQL like :mod:`fieldstation.store.retention`. A recording is *chosen* by an
:class:`UploadSelection` (or by the ``upload`` command, which inserts its row directly);
:func:`awaiting_upload` is the WHERE clause retention adds so that a chosen recording is not
deleted while its upload can still succeed (its row ``pending``, or no row yet).

Row states: ``pending`` → ``sent`` (the hub confirmed the whole file by its sha256), or a
final state that no longer protects the recording: ``missing`` (the file is gone, or the
``min_free`` guard deleted it unconfirmed), ``refused`` (the hub refused it for good;
``last_error`` starts ``refused <HTTP status>:``), ``corrupt`` (the local file no longer
matches its sha256) and ``expired`` (``[upload] max_age`` / ``max_attempts`` reached).

Two threads may queue the same recording at once (the upload job's :func:`queue_chosen`, the
``upload`` command's :func:`queue_recording`): each inserts with ``ON CONFLICT DO NOTHING``
on the unique ``recording_id``, so the second reuses the first's row.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from fieldstation.store.models import Detection, Recording, Upload

__all__ = [
    "FINAL_STATES",
    "UploadSelection",
    "awaiting_upload",
    "chosen",
    "due_uploads",
    "queue_chosen",
    "queue_log_bundle",
    "queue_recording",
    "requeue_refused",
    "forget_unconfirmed",
]

FINAL_STATES = ("sent", "missing", "refused", "corrupt", "expired")
"""Row states the upload job never tries again (see the module docstring)."""


@dataclass(frozen=True)
class UploadSelection:
    """Which recordings to upload: ``select`` is ``all``, ``detections``, ``pinned``,
    ``labels`` or ``none``; ``labels`` and ``min_score`` as in ``[upload]``; ``sensors``:
    None for every sensor."""

    select: str = "detections"
    labels: tuple[str, ...] = ()
    min_score: float = 0.0
    sensors: tuple[str, ...] | None = None

    @classmethod
    def of(cls, config: Any) -> UploadSelection:
        """From an ``[upload]`` section (:class:`fieldstation.config.upload.UploadConfig`)."""
        return cls(
            select=config.select,
            labels=tuple(config.labels),
            min_score=config.min_score,
            sensors=None if config.sensors is None else tuple(config.sensors),
        )


def chosen(selection: UploadSelection) -> ColumnElement[bool]:
    """WHERE clause: recordings the selection chooses (whatever their file or upload state)."""
    clause: ColumnElement[bool]
    if selection.select == "all":
        clause = true()
    elif selection.select == "pinned":
        clause = Recording.pinned.is_(True)
    elif selection.select in ("detections", "labels"):
        conditions: list[ColumnElement[bool]] = [
            Detection.recording_id == Recording.id,
            Detection.score >= selection.min_score,
        ]
        if selection.select == "labels":
            conditions.append(Detection.label.in_(selection.labels))
        clause = exists(select(Detection.id).where(*conditions))
    else:
        clause = false()
    if selection.sensors is not None:
        clause = and_(clause, Recording.sensor.in_(selection.sensors))
    return clause


def awaiting_upload(selection: UploadSelection | None) -> ColumnElement[bool]:
    """WHERE clause: recordings whose upload can still succeed. A ``pending`` row (asked for
    by the selection or by the ``upload`` command), or chosen by ``selection`` (None: only
    rows count) and without a row yet (chosen but not queued, e.g. between a processor's
    commit and the upload job's next look). A row in a final state (:data:`FINAL_STATES`:
    sent, refused, corrupt, expired, missing) protects nothing."""
    unsent = exists(
        select(Upload.id).where(Upload.recording_id == Recording.id, Upload.state == "pending")
    )
    if selection is None or selection.select == "none":
        return unsent
    queued = exists(select(Upload.id).where(Upload.recording_id == Recording.id))
    return or_(unsent, and_(chosen(selection), ~queued))


def _new_row(now: datetime, **values: object) -> Upload:
    return Upload(**_new_values(now, **values))


def _new_values(now: datetime, **values: object) -> dict[str, object]:
    return {
        "upload_id": str(uuid.uuid4()),
        "state": "pending",
        "offset": 0,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        **values,
    }


def _insert_recording_row(session: Session, now: datetime, **values: object) -> bool:
    """Insert a pending recording row unless one exists for its ``recording_id`` (another
    thread may have inserted it since this one looked); True when inserted."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(Upload)
        .values(**_new_values(now, kind="recording", **values))
        .on_conflict_do_nothing(index_elements=["recording_id"])
    )
    return bool(session.execute(statement).rowcount)  # type: ignore[attr-defined]


def queue_chosen(
    session: Session, selection: UploadSelection, now: datetime, *, limit: int = 500
) -> int:
    """Insert a pending row for each present, processed recording the selection chooses that
    has none yet (oldest first, at most ``limit``); returns how many."""
    if selection.select == "none":
        return 0
    rows = session.execute(
        select(Recording.id, Recording.path, Recording.bytes, Recording.sha256)
        .where(
            Recording.file_state == "present",
            Recording.state.in_(("processed", "failed", "quarantined")),
            chosen(selection),
            ~exists(select(Upload.id).where(Upload.recording_id == Recording.id)),
        )
        .order_by(Recording.started_at, Recording.id)
        .limit(limit)
    ).all()
    return sum(
        _insert_recording_row(
            session, now, recording_id=recording_id, path=path, bytes=size, sha256=sha256
        )
        for recording_id, path, size, sha256 in rows
    )


def queue_recording(session: Session, recording: Recording, now: datetime) -> Upload:
    """The upload row of ``recording``: its existing one (made pending again, due now, when
    it was ``missing``), else a new pending row."""
    mine = select(Upload).where(Upload.recording_id == recording.id)
    row = session.scalars(mine).first()
    if row is None:
        _insert_recording_row(
            session,
            now,
            recording_id=recording.id,
            path=recording.path,
            bytes=recording.bytes,
            sha256=recording.sha256,
        )
        row = session.scalars(mine.execution_options(populate_existing=True)).one()
    elif row.state == "missing" and recording.file_state == "present":
        row.state, row.next_attempt_at, row.last_error = "pending", now, None
    return row


def queue_log_bundle(session: Session, now: datetime) -> Upload:
    """A new pending row for a log bundle (built by the upload job when it sends it)."""
    row = _new_row(now, kind="log_bundle")
    session.add(row)
    return row


def due_uploads(session: Session, now: datetime, *, limit: int = 20) -> Sequence[Upload]:
    """Pending rows whose next attempt is due, oldest first."""
    return session.scalars(
        select(Upload)
        .where(Upload.state == "pending", Upload.next_attempt_at <= now)
        .order_by(Upload.next_attempt_at, Upload.id)
        .limit(limit)
    ).all()


def requeue_refused(session: Session, statuses: Sequence[int], now: datetime) -> int:
    """Make the rows the hub refused with one of ``statuses`` (e.g. 401, 403 after the token
    changed) pending again, due now, with their attempts reset; returns how many. Rows of
    recordings whose file was deleted meanwhile stay refused."""
    refused_for = or_(*(Upload.last_error.like(f"refused {status}:%") for status in statuses))
    present = or_(
        Upload.recording_id.is_(None),
        exists(
            select(Recording.id).where(
                Recording.id == Upload.recording_id, Recording.file_state == "present"
            )
        ),
    )
    result = session.execute(
        update(Upload)
        .where(Upload.state == "refused", refused_for, present)
        .values(state="pending", next_attempt_at=now, attempts=0)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def forget_unconfirmed(session: Session, recording_ids: Sequence[int], reason: str) -> int:
    """Mark the ``pending`` rows of ``recording_ids`` (just deleted by retention) ``missing``
    with ``reason``; returns how many."""
    count = 0
    for first in range(0, len(recording_ids), 500):
        result = session.execute(
            update(Upload)
            .where(
                Upload.recording_id.in_(recording_ids[first : first + 500]),
                Upload.state == "pending",
            )
            .values(state="missing", last_error=reason)
            .execution_options(synchronize_session=False)
        )
        count += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return count
