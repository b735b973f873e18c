"""Repository of the ``uploads`` table: which files go to the hub, and what the hub confirmed.

Set-based SQL like :mod:`fieldstation.store.retention`. A recording is *chosen* by an
:class:`UploadSelection` (or by the ``upload`` command, which inserts its row directly);
:func:`awaiting_upload` is the WHERE clause retention adds so that a chosen recording is never
deleted before the hub confirmed it (its row ``sent``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, or_, select, true
from sqlalchemy.orm import Session

from fieldstation.store.models import Detection, Recording, Upload

__all__ = [
    "UploadSelection",
    "awaiting_upload",
    "chosen",
    "due_uploads",
    "queue_chosen",
    "queue_log_bundle",
    "queue_recording",
]


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
    """WHERE clause: recordings the hub has still to confirm. A row not ``sent`` (asked for
    by the selection or by the ``upload`` command), or chosen by ``selection`` (None: only
    rows count) and without a ``sent`` row yet (chosen but not queued, e.g. between a
    processor's commit and the upload job's next look)."""
    unsent = exists(
        select(Upload.id).where(Upload.recording_id == Recording.id, Upload.state == "pending")
    )
    if selection is None or selection.select == "none":
        return unsent
    sent = exists(
        select(Upload.id).where(Upload.recording_id == Recording.id, Upload.state == "sent")
    )
    return or_(unsent, and_(chosen(selection), ~sent))


def _new_row(now: datetime, **values: object) -> Upload:
    return Upload(
        upload_id=str(uuid.uuid4()),
        state="pending",
        offset=0,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        **values,
    )


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
    for recording_id, path, size, sha256 in rows:
        session.add(
            _new_row(
                now,
                kind="recording",
                recording_id=recording_id,
                path=path,
                bytes=size,
                sha256=sha256,
            )
        )
    return len(rows)


def queue_recording(session: Session, recording: Recording, now: datetime) -> Upload:
    """The upload row of ``recording``: its existing one (made pending again, due now, when
    it was ``missing``), else a new pending row."""
    row = session.scalars(select(Upload).where(Upload.recording_id == recording.id)).first()
    if row is None:
        row = _new_row(
            now,
            kind="recording",
            recording_id=recording.id,
            path=recording.path,
            bytes=recording.bytes,
            sha256=recording.sha256,
        )
        session.add(row)
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
